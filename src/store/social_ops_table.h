/*
 * social_ops_table.h - the struct social_ops of one driver, made of the
 * rules (social_rules.c) bound to that driver's primitives.  Included once
 * by sqlite_social.c and once by mysql_social.c, after they define
 * SOCIAL_PRIMS (their struct sdb_prims), SOCIAL_OPS_VAR (the table's name)
 * and SOCIAL_DRIVER_NAME.  No include guard: that is the point.
 */
#if !defined(SOCIAL_PRIMS) || !defined(SOCIAL_OPS_VAR) || !defined(SOCIAL_DRIVER_NAME)
#error "define SOCIAL_PRIMS, SOCIAL_OPS_VAR and SOCIAL_DRIVER_NAME first"
#endif

static int op_friend_request(struct store *st, int32_t from, int32_t to, int max_friends,
                             int *outcome)
{
    return rules_friend_request(&SOCIAL_PRIMS, st, from, to, max_friends, outcome);
}

static int op_friend_decline(struct store *st, int32_t user, int32_t from)
{
    return rules_friend_decline(&SOCIAL_PRIMS, st, user, from);
}

static int op_requests_in(struct store *st, int32_t user, store_user_cb cb, void *arg)
{
    return rules_requests_in(&SOCIAL_PRIMS, st, user, cb, arg);
}

static int op_requests_out(struct store *st, int32_t user, store_user_cb cb, void *arg)
{
    return rules_requests_out(&SOCIAL_PRIMS, st, user, cb, arg);
}

static int op_friend_add(struct store *st, int32_t user, int32_t friend_id, int max_friends)
{
    return rules_friend_add(&SOCIAL_PRIMS, st, user, friend_id, max_friends);
}

static int op_friend_remove(struct store *st, int32_t user, int32_t friend_id)
{
    return rules_friend_remove(&SOCIAL_PRIMS, st, user, friend_id);
}

static int op_friends(struct store *st, int32_t user, store_user_cb cb, void *arg)
{
    return rules_friends(&SOCIAL_PRIMS, st, user, cb, arg);
}

static int op_block(struct store *st, int32_t user, int32_t target)
{
    return rules_block(&SOCIAL_PRIMS, st, user, target);
}

static int op_unblock(struct store *st, int32_t user, int32_t target)
{
    return rules_unblock(&SOCIAL_PRIMS, st, user, target);
}

static int op_blocked_list(struct store *st, int32_t user, store_user_cb cb, void *arg)
{
    return rules_blocked_list(&SOCIAL_PRIMS, st, user, cb, arg);
}

static int op_blocked_by(struct store *st, int32_t user, store_user_cb cb, void *arg)
{
    return rules_blocked_by(&SOCIAL_PRIMS, st, user, cb, arg);
}

static int op_is_blocked(struct store *st, int32_t a, int32_t b, bool *blocked)
{
    return rules_is_blocked(&SOCIAL_PRIMS, st, a, b, blocked);
}

static int op_group_role(struct store *st, int32_t group, int32_t user,
                         char role[SOCIAL_ROLE_MAX + 1])
{
    return rules_group_role(&SOCIAL_PRIMS, st, group, user, role);
}

static int op_group_members(struct store *st, int32_t group, store_member_cb cb, void *arg)
{
    return rules_group_members(&SOCIAL_PRIMS, st, group, cb, arg);
}

static int op_group_leave(struct store *st, int32_t group, int32_t user, struct social_leave *out)
{
    return rules_group_leave(&SOCIAL_PRIMS, st, group, user, out);
}

static int op_group_kick(struct store *st, int32_t group, int32_t by, int32_t target)
{
    return rules_group_kick(&SOCIAL_PRIMS, st, group, by, target);
}

static int op_group_set_role(struct store *st, int32_t group, int32_t by, int32_t target,
                             const char *role)
{
    return rules_group_set_role(&SOCIAL_PRIMS, st, group, by, target, role);
}

static int op_group_update(struct store *st, int32_t group, int32_t by, const char *name,
                           const char *desc)
{
    return rules_group_update(&SOCIAL_PRIMS, st, group, by, name, desc);
}

static int op_group_delete(struct store *st, int32_t group, int32_t by)
{
    return rules_group_delete(&SOCIAL_PRIMS, st, group, by);
}

static int op_group_count(struct store *st, int32_t user, int *count)
{
    return rules_group_count(&SOCIAL_PRIMS, st, user, count);
}

static int op_login_groups(struct store *st, int32_t user, social_group_row_cb cb, void *arg)
{
    return rules_login_groups(&SOCIAL_PRIMS, st, user, cb, arg);
}

static int op_token_create(struct store *st, int32_t user, const char *device, int64_t expires_at,
                           char token[SOCIAL_TOKEN_CHARS + 1])
{
    return rules_token_create(&SOCIAL_PRIMS, st, user, device, expires_at, token);
}

static int op_token_check(struct store *st, int32_t user, const char *token, int64_t now,
                          char device[SOCIAL_DEVICE_MAX + 1])
{
    return rules_token_check(&SOCIAL_PRIMS, st, user, token, now, device);
}

static int op_token_revoke(struct store *st, int32_t user, const char *token)
{
    return rules_token_revoke(&SOCIAL_PRIMS, st, user, token);
}

static int op_token_revoke_all(struct store *st, int32_t user, int *revoked)
{
    return rules_token_revoke_all(&SOCIAL_PRIMS, st, user, revoked);
}

static int op_password_change(struct store *st, int32_t user, const char *pwhash)
{
    return rules_password_change(&SOCIAL_PRIMS, st, user, pwhash);
}

const struct social_ops SOCIAL_OPS_VAR = {
    .name = SOCIAL_DRIVER_NAME,
    .friend_request = op_friend_request,
    .friend_decline = op_friend_decline,
    .requests_in = op_requests_in,
    .requests_out = op_requests_out,
    .friend_add = op_friend_add,
    .friend_remove = op_friend_remove,
    .friends = op_friends,
    .block = op_block,
    .unblock = op_unblock,
    .blocked_list = op_blocked_list,
    .blocked_by = op_blocked_by,
    .is_blocked = op_is_blocked,
    .group_role = op_group_role,
    .group_members = op_group_members,
    .group_leave = op_group_leave,
    .group_kick = op_group_kick,
    .group_set_role = op_group_set_role,
    .group_update = op_group_update,
    .group_delete = op_group_delete,
    .group_count = op_group_count,
    .login_groups = op_login_groups,
    .token_create = op_token_create,
    .token_check = op_token_check,
    .token_revoke = op_token_revoke,
    .token_revoke_all = op_token_revoke_all,
    .password_change = op_password_change,
};
