/*
 * store.c - find a storage driver by its name (the storage.driver key).
 */
#include <stddef.h>
#include <string.h>

#include "store/store.h"

static const struct store_ops *const drivers[] = {
    &store_sqlite_ops,
    &store_mysql_ops,
};

const struct store_ops *store_driver(const char *name)
{
    size_t i;

    if (name == NULL)
        return NULL;
    for (i = 0; i < sizeof(drivers) / sizeof(drivers[0]); i++)
        if (strcmp(drivers[i]->name, name) == 0)
            return drivers[i];
    return NULL;
}
