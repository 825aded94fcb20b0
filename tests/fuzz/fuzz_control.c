/*
 * fuzz_control.c - libFuzzer target: arbitrary bytes as a control-socket
 * request (what qchatctl sends the master), through the master's parser.
 *
 * control_parse must refuse everything but one JSON object on the first
 * line, with a reason, and never read past the bytes received; an accepted
 * object's "cmd" and "id" are read the way the master reads them.  An
 * error reply is built too (control_error), as the master would send it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <json-c/json.h>

#include "common/buf.h"
#include "server/control.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > CONTROL_REQUEST_MAX)
        return 0;
    /* The master's buffer holds exactly what was received (no terminator). */
    char *req = malloc(size ? size : 1);
    if (req == NULL)
        abort();
    memcpy(req, data, size);
    const char *why = NULL;
    struct json_object *obj = control_parse(req, size, &why);
    struct buf out;
    buf_init(&out);
    if (obj == NULL) {
        if (why == NULL)
            abort(); /* a refusal always says why */
        control_error(&out, why);
    } else {
        if (!json_object_is_type(obj, json_type_object))
            abort();
        struct json_object *v;
        if (json_object_object_get_ex(obj, "cmd", &v) && json_object_is_type(v, json_type_string))
            control_error(&out, json_object_get_string(v));
        if (json_object_object_get_ex(obj, "id", &v))
            (void)json_object_get_int64(v);
        json_object_put(obj);
    }
    buf_free(&out);
    free(req);
    return 0;
}
