/* The C API's tagged values <-> the marshal buffer format (see
 * marshal_format.h), without a Lua state. */
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "marshal_format.h"

synchro_value_t synchro_nil(void) {
  synchro_value_t v;
  memset(&v, 0, sizeof(v));
  v.type = SYNCHRO_TNIL;
  return v;
}

synchro_value_t synchro_boolean(int b) {
  synchro_value_t v = synchro_nil();
  v.type = SYNCHRO_TBOOLEAN;
  v.as.boolean = b != 0;
  return v;
}

synchro_value_t synchro_integer(long long i) {
  synchro_value_t v = synchro_nil();
  v.type = SYNCHRO_TINTEGER;
  v.as.integer = i;
  return v;
}

synchro_value_t synchro_number(double d) {
  synchro_value_t v = synchro_nil();
  v.type = SYNCHRO_TNUMBER;
  v.as.number = d;
  return v;
}

synchro_value_t synchro_bytes(const char *data, size_t len) {
  synchro_value_t v = synchro_nil();
  v.type = SYNCHRO_TBYTES;
  v.as.bytes.data = data;
  v.as.bytes.len = len;
  return v;
}

synchro_value_t synchro_string(const char *s) {
  return synchro_bytes(s, s != NULL ? strlen(s) : 0);
}

synchro_value_t synchro_table(synchro_pair_t *pairs, size_t count) {
  synchro_value_t v = synchro_nil();
  v.type = SYNCHRO_TTABLE;
  v.as.table.pairs = pairs;
  v.as.table.count = count;
  return v;
}

/* ---- encoding ---- */

static int put_byte(synchro_buf_t *b, int byte) {
  unsigned char c = (unsigned char)byte;
  return synchro__buf_append(b, &c, 1);
}

static int put_varint(synchro_buf_t *b, uint64_t v) {
  unsigned char tmp[10];
  size_t n = 0;
  for (; v >= 0x80; v >>= 7)
    tmp[n++] = (unsigned char)(v | 0x80);
  tmp[n++] = (unsigned char)v;
  return synchro__buf_append(b, tmp, n);
}

static int put_u32(synchro_buf_t *b, uint32_t v) {
  unsigned char tmp[4];
  tmp[0] = (unsigned char)v;
  tmp[1] = (unsigned char)(v >> 8);
  tmp[2] = (unsigned char)(v >> 16);
  tmp[3] = (unsigned char)(v >> 24);
  return synchro__buf_append(b, tmp, 4);
}

static int encode(synchro_buf_t *b, const synchro_value_t *v, int depth) {
  size_t i;
  if (depth > MAX_DEPTH)
    return SYNCHRO_EINVAL;
  switch (v->type) {
  case SYNCHRO_TNIL:
    return put_byte(b, TAG_NIL);
  case SYNCHRO_TBOOLEAN:
    return put_byte(b, v->as.boolean ? TAG_TRUE : TAG_FALSE);
  case SYNCHRO_TINTEGER: {
    uint64_t u = (uint64_t)v->as.integer;
    TRY(put_byte(b, TAG_INT));
    /* zigzag */
    return put_varint(b, (u << 1) ^ (v->as.integer < 0 ? ~(uint64_t)0 : 0));
  }
  case SYNCHRO_TNUMBER: {
    lua_Number n = (lua_Number)v->as.number;
    TRY(put_byte(b, TAG_FLOAT));
    return synchro__buf_append(b, &n, sizeof(n));
  }
  case SYNCHRO_TBYTES:
    if (v->as.bytes.data == NULL && v->as.bytes.len > 0)
      return SYNCHRO_EINVAL;
    TRY(put_byte(b, TAG_STRING));
    TRY(put_varint(b, v->as.bytes.len));
    return synchro__buf_append(b, v->as.bytes.data, v->as.bytes.len);
  case SYNCHRO_TTABLE:
    if (v->as.table.pairs == NULL && v->as.table.count > 0)
      return SYNCHRO_EINVAL;
    if (v->as.table.count > UINT32_MAX)
      return SYNCHRO_EINVAL;
    TRY(put_byte(b, TAG_TABLE));
    TRY(put_varint(b, 0)); /* everything in the hash part */
    TRY(put_u32(b, (uint32_t)v->as.table.count));
    for (i = 0; i < v->as.table.count; i++) {
      const synchro_pair_t *p = &v->as.table.pairs[i];
      if (p->key.type == SYNCHRO_TNIL)
        return SYNCHRO_EINVAL;
      TRY(encode(b, &p->key, depth + 1));
      TRY(encode(b, &p->value, depth + 1));
    }
    return 0;
  default:
    return SYNCHRO_EINVAL;
  }
}

int synchro__capi_encode(synchro_buf_t *b, const synchro_value_t *first,
                         const synchro_value_t *args, size_t nargs) {
  size_t i;
  TRY(put_byte(b, MAGIC));
  TRY(put_byte(b, VERSION));
  TRY(put_varint(b, nargs + (first != NULL)));
  if (first != NULL)
    TRY(encode(b, first, 1));
  for (i = 0; i < nargs; i++)
    TRY(encode(b, &args[i], 1));
  return 0;
}

/* ---- decoding ---- */

typedef struct {
  const unsigned char *p, *end;
} reader;

static int get_byte(reader *r, int *out) {
  if (r->p >= r->end)
    return SYNCHRO_EBADBUF;
  *out = *r->p++;
  return 0;
}

static int get_varint(reader *r, uint64_t *out) {
  uint64_t v = 0;
  int shift;
  for (shift = 0; shift < 64; shift += 7) {
    int byte;
    TRY(get_byte(r, &byte));
    v |= (uint64_t)(byte & 0x7f) << shift;
    if (!(byte & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return SYNCHRO_EBADBUF;
}

static void value_clear(synchro_value_t *v) {
  size_t i;
  if (v->type == SYNCHRO_TBYTES) {
    free((void *)v->as.bytes.data);
  } else if (v->type == SYNCHRO_TTABLE) {
    for (i = 0; i < v->as.table.count; i++) {
      value_clear(&v->as.table.pairs[i].key);
      value_clear(&v->as.table.pairs[i].value);
    }
    free(v->as.table.pairs);
  }
  v->type = SYNCHRO_TNIL;
}

void synchro_values_free(synchro_value_t *values, size_t n) {
  size_t i;
  if (values == NULL)
    return;
  for (i = 0; i < n; i++)
    value_clear(&values[i]);
  free(values);
}

static int decode(reader *r, synchro_value_t *v, int depth) {
  int tag;
  uint64_t u, narr, i;
  *v = synchro_nil();
  if (depth > MAX_DEPTH)
    return SYNCHRO_EBADBUF;
  TRY(get_byte(r, &tag));
  switch (tag) {
  case TAG_NIL:
    return 0;
  case TAG_FALSE:
  case TAG_TRUE:
    *v = synchro_boolean(tag == TAG_TRUE);
    return 0;
  case TAG_INT:
    TRY(get_varint(r, &u));
    *v = synchro_integer((long long)((u >> 1) ^ (~(u & 1) + 1)));
    return 0;
  case TAG_FLOAT: {
    lua_Number n;
    if ((size_t)(r->end - r->p) < sizeof(n))
      return SYNCHRO_EBADBUF;
    memcpy(&n, r->p, sizeof(n));
    r->p += sizeof(n);
    *v = synchro_number((double)n);
    return 0;
  }
  case TAG_STRING: {
    char *data;
    TRY(get_varint(r, &u));
    if (u > (uint64_t)(r->end - r->p))
      return SYNCHRO_EBADBUF;
    data = malloc((size_t)u + 1);
    if (data == NULL)
      return SYNCHRO_ENOMEM;
    memcpy(data, r->p, (size_t)u);
    data[u] = '\0'; /* a convenience: bytes may hold zeros too */
    r->p += u;
    *v = synchro_bytes(data, (size_t)u);
    return 0;
  }
  case TAG_TABLE: {
    uint32_t nhash;
    synchro_pair_t *pairs;
    size_t count;
    int rc = 0;
    TRY(get_varint(r, &narr));
    if ((size_t)(r->end - r->p) < 4)
      return SYNCHRO_EBADBUF;
    nhash = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 |
            (uint32_t)r->p[2] << 16 | (uint32_t)r->p[3] << 24;
    r->p += 4;
    /* each value takes at least one byte */
    if (narr + 2 * (uint64_t)nhash > (uint64_t)(r->end - r->p))
      return SYNCHRO_EBADBUF;
    count = (size_t)(narr + nhash);
    pairs = calloc(count > 0 ? count : 1, sizeof(*pairs));
    if (pairs == NULL)
      return SYNCHRO_ENOMEM;
    *v = synchro_table(pairs, 0);
    for (i = 0; i < count && rc == 0; i++) {
      if (i < narr) {
        pairs[i].key = synchro_integer((long long)i + 1);
        rc = decode(r, &pairs[i].value, depth + 1);
      } else {
        rc = decode(r, &pairs[i].key, depth + 1);
        if (rc == 0)
          rc = decode(r, &pairs[i].value, depth + 1);
      }
      v->as.table.count = i + 1;
    }
    return rc;
  }
  case TAG_CLASS: {
    /* an error table of a Lua class: C has no classes, so its text (the
     * sender's tostring()) if it has one, else the table alone */
    const unsigned char *text = NULL;
    uint64_t tlen = 0;
    int has_text, rc;
    TRY(get_varint(r, &u));
    for (i = 0; i < 2 * u; i++) { /* the class's names */
      TRY(get_varint(r, &narr));
      if (narr > (uint64_t)(r->end - r->p))
        return SYNCHRO_EBADBUF;
      r->p += narr;
    }
    TRY(get_byte(r, &has_text));
    if (has_text) {
      TRY(get_varint(r, &tlen));
      if (tlen > (uint64_t)(r->end - r->p))
        return SYNCHRO_EBADBUF;
      text = r->p;
      r->p += tlen;
    }
    if (r->p == r->end || *r->p != TAG_TABLE)
      return SYNCHRO_EBADBUF;
    rc = decode(r, v, depth + 1);
    if (rc != 0 || text == NULL)
      return rc;
    value_clear(v);
    {
      char *data = malloc((size_t)tlen + 1);
      if (data == NULL)
        return SYNCHRO_ENOMEM;
      memcpy(data, text, (size_t)tlen);
      data[tlen] = '\0';
      *v = synchro_bytes(data, (size_t)tlen);
    }
    return 0;
  }
  default:
    /* functions, shared references, modules: not C values */
    return SYNCHRO_EMARSHAL;
  }
}

int synchro__capi_decode(const char *data, size_t len,
                         synchro_value_t **out, size_t *n) {
  reader r;
  int b, rc = 0;
  uint64_t count, i;
  synchro_value_t *values;
  *out = NULL;
  *n = 0;
  r.p = (const unsigned char *)data;
  r.end = r.p + len;
  if (get_byte(&r, &b) || b != MAGIC || get_byte(&r, &b) || b != VERSION ||
      get_varint(&r, &count) || count > (uint64_t)(r.end - r.p))
    return SYNCHRO_EBADBUF;
  if (count == 0)
    return 0;
  values = calloc((size_t)count, sizeof(*values));
  if (values == NULL)
    return SYNCHRO_ENOMEM;
  for (i = 0; i < count && rc == 0; i++)
    rc = decode(&r, &values[i], 1);
  if (rc == 0 && r.p != r.end)
    rc = SYNCHRO_EBADBUF;
  if (rc != 0) {
    synchro_values_free(values, (size_t)count);
    return rc;
  }
  *out = values;
  *n = (size_t)count;
  return 0;
}
