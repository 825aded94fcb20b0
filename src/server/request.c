/*
 * request.c - reading a request's fields, shared by the handler files.
 */
#include <stdint.h>

#include <json-c/json.h>

#include "server/request.h"

int request_id(struct json_object *obj, const char *key, int32_t *out)
{
    struct json_object *v;
    if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_int))
        return QC_EBADREQ;
    int64_t x = json_object_get_int64(v);
    if (x <= 0 || x > INT32_MAX)
        return QC_EBADREQ;
    *out = (int32_t)x;
    return QC_OK;
}
