/* gbtd nn: checkpoints (HDF5) and weights files (safetensors) of a network. */
#include <stdio.h>
#include <string.h>

#include "core/status.h"
#include "io/io.h"
#include "nn/train.h"

static bool is_state_(const gbtd_net_entry *e)
{
    return e->kind == GBTD_ENTRY_BN_MEAN || e->kind == GBTD_ENTRY_BN_VAR;
}

static void ds_name_(const gbtd_net_entry *e, char *buf, size_t len)
{
    snprintf(buf, len, "/%s/%s", is_state_(e) ? "buffers" : "params", e->name);
}

int gbtd_checkpoint_save(const char *path, const gbtd_net *net, const gbtd_sgd *opt,
                         const gbtd_train_state *st)
{
    if (!path || !net || !net->finalized)
        return gbtd_error(GBTD_EINVAL, "checkpoint_save: NULL path or unfinalised network");
    gbtd_h5 *f;
    GBTD_CHECK(gbtd_h5_create(path, &f));
    gbtd_attr_list at;
    memset(&at, 0, sizeof at);
    int rc = gbtd_attr_list_set_string(&at, "format", "gbtd-checkpoint");
    if (!rc) rc = gbtd_attr_list_set_int(&at, "version", GBTD_CHECKPOINT_VERSION);
    if (!rc) rc = gbtd_attr_list_set_string(&at, "spec", net->spec);
    if (!rc) rc = gbtd_attr_list_set_int(&at, "params", net->nparams);
    if (!rc && st) rc = gbtd_attr_list_set_int(&at, "epoch", st->epoch);
    if (!rc && st) rc = gbtd_attr_list_set_int(&at, "step", st->step);
    if (!rc && st) rc = gbtd_attr_list_set_int(&at, "seed", (int64_t)st->seed);
    if (!rc) rc = gbtd_h5_write_attrs(f, "/", &at);
    gbtd_attr_list_free(&at);
    char name[GBTD_NET_NAME_LEN + 16];
    for (int i = 0; i < net->nentries && !rc; i++) {
        const gbtd_net_entry *e = &net->entries[i];
        ds_name_(e, name, sizeof name);
        rc = gbtd_h5_write_float(f, name, e->ndim, e->shape, gbtd_net_entry_data(net, e));
    }
    if (!rc && opt && opt->velocity) {
        int64_t n = opt->n;
        rc = gbtd_h5_write_float(f, "/optim/velocity", 1, &n, opt->velocity);
    }
    if (rc) {
        gbtd_h5_discard(f);
        return rc;
    }
    return gbtd_h5_close(f);
}

/* Open a checkpoint and check its format and version. */
static int open_ckpt_(const char *path, gbtd_h5 **f, gbtd_attr_list *at)
{
    memset(at, 0, sizeof *at);
    GBTD_CHECK(gbtd_h5_open(path, f));
    int rc = gbtd_h5_read_attrs(*f, "/", at);
    const gbtd_attr *fmt = rc ? NULL : gbtd_attr_list_find(at, "format");
    const gbtd_attr *ver = rc ? NULL : gbtd_attr_list_find(at, "version");
    if (!rc && (!fmt || fmt->kind != GBTD_ATTR_STRING || strcmp(fmt->strs[0], "gbtd-checkpoint")))
        rc = gbtd_error(GBTD_EFORMAT, "%s: not a gbtd checkpoint (no root attribute "
                        "format = 'gbtd-checkpoint')", path);
    if (!rc && (!ver || ver->kind != GBTD_ATTR_INT))
        rc = gbtd_error(GBTD_EFORMAT, "%s: checkpoint without an integer 'version' attribute",
                        path);
    if (!rc && ver->ints[0] != GBTD_CHECKPOINT_VERSION)
        rc = gbtd_error(GBTD_EUNSUPPORTED, "%s: checkpoint version %lld, this gbtd reads version "
                        "%d (hint: use the gbtd release that wrote it, or export the weights "
                        "with h5py and load them as safetensors)", path,
                        (long long)ver->ints[0], GBTD_CHECKPOINT_VERSION);
    if (rc) {
        gbtd_attr_list_free(at);
        gbtd_h5_close(*f);
        *f = NULL;
    }
    return rc;
}

int gbtd_checkpoint_spec(const char *path, char *spec, size_t len)
{
    if (!path || !spec || len < 1) return gbtd_error(GBTD_EINVAL, "checkpoint_spec: bad argument");
    gbtd_h5 *f;
    gbtd_attr_list at;
    GBTD_CHECK(open_ckpt_(path, &f, &at));
    const gbtd_attr *s = gbtd_attr_list_find(&at, "spec");
    int rc = GBTD_OK;
    if (!s || s->kind != GBTD_ATTR_STRING || !s->strs[0][0])
        rc = gbtd_error(GBTD_EFORMAT, "%s: checkpoint has no 'spec' attribute", path);
    else
        snprintf(spec, len, "%s", s->strs[0]);
    gbtd_attr_list_free(&at);
    gbtd_h5_close(f);
    return rc;
}

int gbtd_checkpoint_load(const char *path, gbtd_net *net, gbtd_sgd *opt, gbtd_train_state *st)
{
    if (!path || !net || !net->finalized)
        return gbtd_error(GBTD_EINVAL, "checkpoint_load: NULL path or unfinalised network");
    gbtd_h5 *f;
    gbtd_attr_list at;
    GBTD_CHECK(open_ckpt_(path, &f, &at));
    int rc = GBTD_OK;
    char name[GBTD_NET_NAME_LEN + 16];
    for (int i = 0; i < net->nentries && !rc; i++) {
        const gbtd_net_entry *e = &net->entries[i];
        ds_name_(e, name, sizeof name);
        if (!gbtd_h5_has_dataset(f, name))
            rc = gbtd_error(GBTD_ENOTFOUND, "%s: no dataset %s (checkpoint of another network?)",
                            path, name);
        else
            rc = gbtd_h5_read_float_into(f, name, e->ndim, e->shape, gbtd_net_entry_data(net, e));
    }
    if (!rc && opt && opt->velocity) {
        int64_t n = opt->n;
        if (gbtd_h5_has_dataset(f, "/optim/velocity"))
            rc = gbtd_h5_read_float_into(f, "/optim/velocity", 1, &n, opt->velocity);
        else
            memset(opt->velocity, 0, (size_t)n * sizeof(float));
    }
    if (!rc && st) {
        const gbtd_attr *a;
        memset(st, 0, sizeof *st);
        if ((a = gbtd_attr_list_find(&at, "epoch")) && a->kind == GBTD_ATTR_INT) st->epoch = a->ints[0];
        if ((a = gbtd_attr_list_find(&at, "step")) && a->kind == GBTD_ATTR_INT) st->step = a->ints[0];
        if ((a = gbtd_attr_list_find(&at, "seed")) && a->kind == GBTD_ATTR_INT)
            st->seed = (uint64_t)a->ints[0];
    }
    gbtd_attr_list_free(&at);
    gbtd_h5_close(f);
    return rc;
}

int gbtd_net_load_safetensors(gbtd_net *net, const char *path)
{
    if (!net || !net->finalized || !path)
        return gbtd_error(GBTD_EINVAL, "load_safetensors: NULL path or unfinalised network");
    gbtd_tensor_set s;
    memset(&s, 0, sizeof s);
    GBTD_CHECK(gbtd_safetensors_read(path, &s));
    int rc = GBTD_OK;
    for (int i = 0; i < s.count && !rc; i++) {
        if (strstr(s.items[i].name, "num_batches_tracked")) continue;
        if (!gbtd_net_find(net, s.items[i].name))
            rc = gbtd_error(GBTD_ENOTFOUND, "%s: tensor '%s' has no place in network %s", path,
                            s.items[i].name, net->spec);
    }
    for (int i = 0; i < net->nentries && !rc; i++) {
        const gbtd_net_entry *e = &net->entries[i];
        const gbtd_named_tensor *t = gbtd_tensor_set_find(&s, e->name);
        if (!t) {
            rc = gbtd_error(GBTD_ENOTFOUND, "%s: no tensor '%s' for network %s", path, e->name,
                            net->spec);
            break;
        }
        bool same = t->ndim == e->ndim;
        for (int k = 0; same && k < e->ndim; k++) same = t->shape[k] == e->shape[k];
        if (!same) {
            rc = gbtd_error(GBTD_ESHAPE, "%s: tensor '%s' has another shape than the network's",
                            path, e->name);
            break;
        }
        rc = gbtd_named_tensor_to_float(t, gbtd_net_entry_data(net, e));
    }
    gbtd_tensor_set_free(&s);
    return rc;
}

int gbtd_net_save_safetensors(const gbtd_net *net, const char *path)
{
    if (!net || !net->finalized || !path)
        return gbtd_error(GBTD_EINVAL, "save_safetensors: NULL path or unfinalised network");
    gbtd_tensor_set s;
    memset(&s, 0, sizeof s);
    int rc = GBTD_OK;
    for (int i = 0; i < net->nentries && !rc; i++) {
        const gbtd_net_entry *e = &net->entries[i];
        rc = gbtd_tensor_set_add(&s, e->name, GBTD_DTYPE_F32, e->ndim, e->shape,
                                 gbtd_net_entry_data(net, e));
    }
    if (!rc) rc = gbtd_safetensors_write(path, &s);
    gbtd_tensor_set_free(&s);
    return rc;
}
