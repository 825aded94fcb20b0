/*
 * metrics_sample.h - gauges a worker measures by looking at its own state
 * (bytes queued for clients and on its links), once a second from its tick.
 */
#ifndef QCHAT_SERVER_METRICS_SAMPLE_H
#define QCHAT_SERVER_METRICS_SAMPLE_H

struct worker;

/* Call from the worker's tick; samples at most once per METRICS_SAMPLE_MS. */
void metrics_sample_worker(struct worker *w);

#endif
