/* gbtd models: gbtd networks -> safetensors for PyTorch; batch-norm folding. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/status.h"
#include "models/models_internal.h"

gbtd_export_opts gbtd_export_opts_default(void)
{
    gbtd_export_opts o;
    memset(&o, 0, sizeof o);
    o.dtype = GBTD_DTYPE_F32;
    o.num_batches_tracked = true;
    return o;
}

static void json_list_(char *buf, size_t len, size_t *p, const char *key, const int *v, int n)
{
    *p += (size_t)snprintf(buf + *p, *p < len ? len - *p : 0, ", \"%s\": [", key);
    for (int s = 0; s < n; s++)
        *p += (size_t)snprintf(buf + *p, *p < len ? len - *p : 0, s ? ", %d" : "%d", v[s]);
    *p += (size_t)snprintf(buf + *p, *p < len ? len - *p : 0, "]");
}

/* The network as JSON (what python/gbtd_torch.py builds from). */
static int arch_json_(const gbtd_arch *a, bool v1, char *buf, size_t len)
{
    size_t p = (size_t)snprintf(
        buf, len,
        "{\"version\": 1, \"stem\": \"%s\", \"stem_width\": %d, \"input\": [%d, %d, %d], "
        "\"classes\": %d, \"block\": \"%s\", \"preact\": %s, \"shortcut\": \"%s\", "
        "\"stride_on_1x1\": %s, \"eps\": %.9g, \"momentum\": %.9g",
        a->stem == GBTD_STEM_IMAGENET ? "imagenet" : "small", a->stem_width, a->in_c, a->in_h,
        a->in_w, a->classes, a->block == GBTD_BLOCK_BASIC ? "basic" : "bottleneck",
        a->preact ? "true" : "false", a->shortcut_a ? "a" : "b", v1 ? "true" : "false",
        (double)a->bn_eps, (double)a->bn_momentum);
    json_list_(buf, len, &p, "units", a->units, a->nstages);
    json_list_(buf, len, &p, "width", a->width, a->nstages);
    json_list_(buf, len, &p, "inner", a->inner, a->nstages);
    json_list_(buf, len, &p, "groups", a->groups, a->nstages);
    json_list_(buf, len, &p, "share", a->share, a->nstages);
    json_list_(buf, len, &p, "stride", a->stride, a->nstages);
    p += (size_t)snprintf(buf + p, p < len ? len - p : 0, "}");
    return p < len ? GBTD_OK : gbtd_error(GBTD_EOVERFLOW, "export: architecture JSON too long");
}

static int add_converted_(gbtd_tensor_set *s, const gbtd_net_entry *e, const float *x,
                          gbtd_dtype dt)
{
    if (dt == GBTD_DTYPE_F32) return gbtd_tensor_set_add(s, e->name, dt, e->ndim, e->shape, x);
    size_t es = gbtd_dtype_size(dt);
    void *buf = gbtd_malloc((size_t)e->numel * es + 1);
    if (!buf) return GBTD_ENOMEM;
    for (int64_t i = 0; i < e->numel; i++) {
        if (dt == GBTD_DTYPE_F64) ((double *)buf)[i] = x[i];
        else if (dt == GBTD_DTYPE_F16) ((uint16_t *)buf)[i] = gbtd_float_to_f16(x[i]);
        else ((uint16_t *)buf)[i] = gbtd_float_to_bf16(x[i]);
    }
    int rc = gbtd_tensor_set_add(s, e->name, dt, e->ndim, e->shape, buf);
    gbtd_free(buf);
    return rc;
}

int gbtd_model_export(const gbtd_net *net, const char *path, const gbtd_export_opts *opts)
{
    if (!net || !net->finalized || !path)
        return gbtd_error(GBTD_EINVAL, "model_export: NULL path or unfinalised network");
    gbtd_export_opts o = opts ? *opts : gbtd_export_opts_default();
    if (o.dtype != GBTD_DTYPE_F32 && o.dtype != GBTD_DTYPE_F16 && o.dtype != GBTD_DTYPE_BF16 &&
        o.dtype != GBTD_DTYPE_F64)
        return gbtd_error(GBTD_EINVAL, "%s: export dtype %s (float32, float16, bfloat16 or "
                          "float64)", path, gbtd_dtype_name(o.dtype));
    gbtd_tensor_set s;
    memset(&s, 0, sizeof s);
    int rc = GBTD_OK;
    const int64_t zero = 0;
    char nm[GBTD_NET_NAME_LEN + 32];
    for (int i = 0; i < net->nentries && !rc; i++) {
        const gbtd_net_entry *e = &net->entries[i];
        rc = add_converted_(&s, e, gbtd_net_entry_data(net, e), o.dtype);
        if (!rc && o.num_batches_tracked && e->kind == GBTD_ENTRY_BN_VAR) {
            size_t n = strlen(e->name) - strlen("running_var");
            snprintf(nm, sizeof nm, "%.*snum_batches_tracked", (int)n, e->name);
            rc = gbtd_tensor_set_add(&s, nm, GBTD_DTYPE_I64, 0, NULL, &zero);
        }
    }
    if (!rc) rc = gbtd_attr_list_set_string(&s.meta, "format", "pt");
    if (!rc && net->spec[0]) rc = gbtd_attr_list_set_string(&s.meta, "gbtd.spec", net->spec);
    if (!rc) {
        snprintf(nm, sizeof nm, "%lld", (long long)net->nparams);
        rc = gbtd_attr_list_set_string(&s.meta, "gbtd.params", nm);
    }
    gbtd_arch a;
    bool v1 = !strncmp(net->spec, "v1:", 3);
    if (!rc && net->spec[0] && gbtd_arch_parse(net->spec + (v1 ? 3 : 0), &a) == GBTD_OK) {
        char js[1024];
        rc = arch_json_(&a, v1, js, sizeof js);
        if (!rc) rc = gbtd_attr_list_set_string(&s.meta, "gbtd.arch", js);
    }
    gbtd_clear_error();
    if (!rc) rc = gbtd_safetensors_write(path, &s);
    gbtd_tensor_set_free(&s);
    return rc;
}

/* ---- batch-norm folding ------------------------------------------------------------------ */

int gbtd_bn_fold(int64_t c_out, int64_t per_out, const float *w, const float *b,
                 const float *gamma, const float *beta, const float *mean, const float *var,
                 float eps, float *w_out, float *b_out)
{
    if (!w || !mean || !var || !w_out || !b_out || c_out < 1 || per_out < 1)
        return gbtd_error(GBTD_EINVAL, "bn_fold: NULL pointer or size < 1");
    if (!(eps > 0)) return gbtd_error(GBTD_EINVAL, "bn_fold: eps %g must be > 0", (double)eps);
    for (int64_t o = 0; o < c_out; o++) {
        double d = (double)var[o] + (double)eps;
        if (!(d > 0) || !isfinite(d))
            return gbtd_error(GBTD_ENONFINITE, "bn_fold: channel %lld: running_var + eps = %g",
                              (long long)o, d);
    }
    for (int64_t o = 0; o < c_out; o++) {
        const double sc = (gamma ? (double)gamma[o] : 1.0) / sqrt((double)var[o] + (double)eps);
        const double bo = b ? (double)b[o] : 0.0;
        const double sh = (beta ? (double)beta[o] : 0.0) + sc * (bo - (double)mean[o]);
        for (int64_t k = 0; k < per_out; k++)
            w_out[o * per_out + k] = (float)(sc * (double)w[o * per_out + k]);
        b_out[o] = (float)sh;
    }
    return GBTD_OK;
}

int gbtd_net_fold_bn(const gbtd_net *net, int conv, float *w_out, float *b_out)
{
    if (!net || !net->finalized || !w_out || !b_out)
        return gbtd_error(GBTD_EINVAL, "net_fold_bn: NULL argument or unfinalised network");
    if (conv < 0 || conv >= net->nlayers || net->layers[conv].kind != GBTD_LAYER_CONV)
        return gbtd_error(GBTD_EINVAL, "net_fold_bn: layer %d is not a convolution", conv);
    const gbtd_layer *C = &net->layers[conv];
    const gbtd_layer *B = NULL;
    int uses = 0;
    for (int l = 0; l < net->nlayers; l++) {
        const gbtd_layer *L = &net->layers[l];
        if (L->in == C->out || L->in2 == C->out) {
            uses++;
            if (L->kind == GBTD_LAYER_BN) B = L;
        }
    }
    if (!B || uses != 1)
        return gbtd_error(GBTD_ENOTFOUND, "net_fold_bn: the output of %s does not go straight "
                          "into one batch norm", C->name);
    const int64_t per = (int64_t)(C->c_in / C->groups) * C->k * C->k;
    return gbtd_bn_fold(C->c_out, per, net->params + C->w, NULL, net->params + B->w,
                        net->params + B->b, net->state + B->mean, net->state + B->var, B->eps,
                        w_out, b_out);
}
