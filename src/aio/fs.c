/* synchro.aio.fs: libuv's file system requests for the loop VM.
 *
 * core.fs_<op>(args..., cb) starts a request on libuv's threadpool and
 * returns a request object whose cancel() abandons it; cb(results...) runs
 * on the loop thread when it completes (results as the Lua side returns
 * them: values, or nil, "ENAME: message", "ENAME"). Arguments come first
 * so that their errors carry the numbers the Lua functions show.
 *
 * Requests are request.c's records (aio.h): libuv owns each until it
 * completes, whatever happens on the Lua side. An abandoned request (its
 * task was cancelled, or the loop VM closed) is uv_cancel'ed if it has
 * not started; otherwise it completes quietly: its callback is not
 * called, and a file it opened is closed.
 *
 * A file object shares an fs_file_t with the requests that use it, so that
 * closing the file while a request still uses its fd defers the close(2)
 * until that request ends (the fd number cannot be reused under it). */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "aio.h"

#define FILE_MT      "synchro.fs.file"
#define DEFAULT_READ 65536
#define MAX_IO       0x7fffffff

typedef struct {
  uv_loop_t *loop;
  uv_file fd;
  int refs; /* the Lua object (until closed) + requests in flight */
} fs_file_t;

typedef struct {
  fs_file_t *file; /* NULL once closed */
} file_box_t;

enum {
  OP_OPEN,
  OP_DONE, /* results in true */
  OP_READ,
  OP_WRITE,
  OP_STAT,
  OP_SCANDIR,
  OP_PTR, /* results in the string req.ptr: realpath, readlink */
  OP_PATH /* results in the string req.path: mkdtemp */
};

typedef struct {
  synchro__req_t base; /* first member */
  uv_fs_t req;
  uv_loop_t *loop;
  fs_file_t *file;
  int kind;
  int cb;      /* the stack index of the Lua function, while starting */
  int adopted; /* an opened fd went into a file object */
  char data[]; /* a read's buffer or a copy of a write's data */
} fs_req_t;

/* ---- files ---- */

static int close_fd(uv_loop_t *loop, uv_file fd) {
  uv_fs_t req;
  int err = uv_fs_close(loop, &req, fd, NULL);
  uv_fs_req_cleanup(&req);
  return err;
}

static void file_unref(fs_file_t *f) {
  if (--f->refs > 0)
    return;
  if (f->fd >= 0)
    close_fd(f->loop, f->fd);
  free(f);
}

/* Pushes a file object owning fd; raises (fd untouched) on no memory. */
static void push_file(lua_State *L, uv_loop_t *loop, uv_file fd) {
  file_box_t *box = lua_newuserdata(L, sizeof(*box));
  box->file = NULL;
  luaL_setmetatable(L, FILE_MT);
  box->file = malloc(sizeof(*box->file));
  if (box->file == NULL)
    luaL_error(L, "not enough memory");
  box->file->loop = loop;
  box->file->fd = fd;
  box->file->refs = 1;
}

/* file:close() (and __gc, __close): closes the fd now, or when the last
 * request using it ends. Returns true or nil, err, code; idempotent. */
static int file_close(lua_State *L) {
  file_box_t *box = synchro__check_udata(L, 1, FILE_MT);
  fs_file_t *f = box->file;
  int err = 0;
  if (f == NULL) {
    lua_pushboolean(L, 1);
    return 1;
  }
  box->file = NULL;
  if (f->refs == 1) {
    err = close_fd(f->loop, f->fd);
    f->fd = -1;
  }
  file_unref(f);
  if (err < 0)
    return synchro__push_uv_error(L, err);
  lua_pushboolean(L, 1);
  return 1;
}

/* file:fileno() -> the fd, or nil once closed. */
static int file_fileno(lua_State *L) {
  file_box_t *box = synchro__check_udata(L, 1, FILE_MT);
  if (box->file == NULL)
    return 0;
  lua_pushinteger(L, box->file->fd);
  return 1;
}

static int file_tostring(lua_State *L) {
  file_box_t *box = synchro__check_udata(L, 1, FILE_MT);
  if (box->file == NULL)
    lua_pushliteral(L, "synchro.fs.file (closed)");
  else
    lua_pushfstring(L, "synchro.fs.file (fd %d)", (int)box->file->fd);
  return 1;
}

/* Argument i: an open file object or a file descriptor (an integer). */
static uv_file check_target(lua_State *L, int i, fs_file_t **file) {
  file_box_t *box = synchro__test_udata(L, i, FILE_MT);
  lua_Integer fd;
  *file = NULL;
  if (box != NULL) {
    if (box->file == NULL)
      luaL_argerror(L, i, "attempt to use a closed file");
    *file = box->file;
    return box->file->fd;
  }
  if (lua_type(L, i) != LUA_TNUMBER)
    luaL_argerror(L, i,
                  lua_pushfstring(L,
                                  "file or file descriptor expected, "
                                  "got %s",
                                  luaL_typename(L, i)));
  fd = lua_tointeger(L, i);
  if (fd < 0 || fd > MAX_IO || (lua_Number)fd != lua_tonumber(L, i))
    luaL_argerror(L, i, "invalid file descriptor");
  return (uv_file)fd;
}

/* ---- results ---- */

static const char *dirent_type(uv_dirent_type_t t) {
  switch (t) {
  case UV_DIRENT_FILE:
    return "file";
  case UV_DIRENT_DIR:
    return "directory";
  case UV_DIRENT_LINK:
    return "link";
  case UV_DIRENT_FIFO:
    return "fifo";
  case UV_DIRENT_SOCKET:
    return "socket";
  case UV_DIRENT_CHAR:
    return "char";
  case UV_DIRENT_BLOCK:
    return "block";
  default:
    return "unknown";
  }
}

static const char *mode_type(uint64_t mode) {
  switch (mode & S_IFMT) {
  case S_IFREG:
    return "file";
  case S_IFDIR:
    return "directory";
  case S_IFLNK:
    return "link";
  case S_IFIFO:
    return "fifo";
  case S_IFSOCK:
    return "socket";
  case S_IFCHR:
    return "char";
  case S_IFBLK:
    return "block";
  default:
    return "unknown";
  }
}

static void set_int(lua_State *L, const char *k, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

static void set_time(lua_State *L, const char *k, uv_timespec_t t) {
  lua_pushnumber(L, (lua_Number)t.tv_sec + (lua_Number)t.tv_nsec / 1e9);
  lua_setfield(L, -2, k);
}

static void push_stat(lua_State *L, const uv_stat_t *s) {
  lua_createtable(L, 0, 16);
  lua_pushstring(L, mode_type(s->st_mode));
  lua_setfield(L, -2, "type");
  set_int(L, "size", s->st_size);
  set_int(L, "mode", s->st_mode);
  set_int(L, "perm", s->st_mode & 07777);
  set_int(L, "ino", s->st_ino);
  set_int(L, "dev", s->st_dev);
  set_int(L, "rdev", s->st_rdev);
  set_int(L, "nlink", s->st_nlink);
  set_int(L, "uid", s->st_uid);
  set_int(L, "gid", s->st_gid);
  set_int(L, "blksize", s->st_blksize);
  set_int(L, "blocks", s->st_blocks);
  set_time(L, "atime", s->st_atim);
  set_time(L, "mtime", s->st_mtim);
  set_time(L, "ctime", s->st_ctim);
  set_time(L, "birthtime", s->st_birthtim);
}

static void push_scandir(lua_State *L, uv_fs_t *req) {
  uv_dirent_t ent;
  lua_Integer i = 0;
  lua_createtable(L, (int)req->result, 0);
  while (uv_fs_scandir_next(req, &ent) == 0) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, ent.name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, dirent_type(ent.type));
    lua_setfield(L, -2, "type");
    lua_rawseti(L, -2, ++i);
  }
}

/* The results of a completed request (request.c calls it protected). */
static int push_results(lua_State *L, synchro__req_t *base) {
  fs_req_t *r = (fs_req_t *)base;
  ssize_t res = r->req.result;
  if (res < 0)
    return synchro__push_uv_error(L, (int)res);
  switch (r->kind) {
  case OP_OPEN:
    push_file(L, r->loop, (uv_file)res);
    r->adopted = 1;
    break;
  case OP_READ:
    lua_pushlstring(L, r->data, (size_t)res);
    break;
  case OP_WRITE:
    lua_pushinteger(L, (lua_Integer)res);
    break;
  case OP_STAT:
    push_stat(L, &r->req.statbuf);
    break;
  case OP_SCANDIR:
    push_scandir(L, &r->req);
    break;
  case OP_PTR:
    lua_pushstring(L, r->req.ptr);
    break;
  case OP_PATH:
    lua_pushstring(L, r->req.path);
    break;
  default:
    lua_pushboolean(L, 1);
    break;
  }
  return 1;
}

/* Whatever became of the request: a file it opened that no file object
 * took is closed. */
static void release(synchro__req_t *base) {
  fs_req_t *r = (fs_req_t *)base;
  if (r->kind == OP_OPEN && r->req.result >= 0 && !r->adopted &&
      base->status >= 0)
    close_fd(r->loop, (uv_file)r->req.result);
  if (r->file != NULL)
    file_unref(r->file);
  uv_fs_req_cleanup(&r->req);
  free(r);
}

static void on_done(uv_fs_t *req) {
  fs_req_t *r = (fs_req_t *)((char *)req - offsetof(fs_req_t, req));
  synchro__req_done(&r->base, (int)(req->result < 0 ? req->result : 0));
}

/* ---- starting requests ---- */

/* A request for kind with extra bytes of data, for the function at cb;
 * raises (nothing allocated) on misuse or no memory. */
static fs_req_t *begin(lua_State *L, int kind, size_t extra, int cb) {
  fs_req_t *r =
      synchro__req_alloc(L, cb, sizeof(fs_req_t), extra, push_results, release);
  r->loop = &synchro__loop_of(L)->loop;
  r->kind = kind;
  r->cb = cb;
  return r;
}

/* Uses file for the request's lifetime (call right before starting). */
static void use_file(fs_req_t *r, fs_file_t *file) {
  if (file != NULL) {
    file->refs++;
    r->file = file;
  }
}

/* err: what uv_fs_<op> returned. Leaves the request object as the one
 * result, or the error triple. */
static int submit(lua_State *L, fs_req_t *r, int err) {
  return synchro__req_submit(L, &r->base, r->cb, (uv_req_t *)&r->req, err);
}

#define LOOP(r) ((r)->loop)

/* Flags: "r", "w", "a" with "+", "x" (exclusive create), "b" (ignored);
 * or an integer of UV_FS_O_* bits. */
static int check_flags(lua_State *L, int i) {
  const char *m, *p;
  int flags;
  if (lua_type(L, i) == LUA_TNUMBER)
    return (int)luaL_checkinteger(L, i);
  m = p = luaL_optstring(L, i, "r");
  switch (*p++) {
  case 'r':
    flags = UV_FS_O_RDONLY;
    break;
  case 'w':
    flags = UV_FS_O_WRONLY | UV_FS_O_CREAT | UV_FS_O_TRUNC;
    break;
  case 'a':
    flags = UV_FS_O_WRONLY | UV_FS_O_CREAT | UV_FS_O_APPEND;
    break;
  default:
    flags = -1;
    break;
  }
  for (; flags != -1 && *p != '\0'; p++) {
    if (*p == '+')
      flags = (flags & ~(UV_FS_O_RDONLY | UV_FS_O_WRONLY | UV_FS_O_RDWR)) |
              UV_FS_O_RDWR;
    else if (*p == 'x' && m[0] != 'r')
      flags |= UV_FS_O_EXCL;
    else if (*p != 'b')
      flags = -1;
  }
  if (flags == -1)
    luaL_argerror(L, i, lua_pushfstring(L, "invalid mode '%s'", m));
  return flags;
}

static int check_mode(lua_State *L, int i, int def) {
  lua_Integer mode = luaL_optinteger(L, i, def);
  if (mode < 0 || mode > 07777)
    luaL_argerror(L, i, "invalid permission bits");
  return (int)mode;
}

/* An optional offset: nil (or absent) for the current position. */
static int64_t check_offset(lua_State *L, int i) {
  lua_Integer off;
  if (lua_isnoneornil(L, i))
    return -1;
  off = luaL_checkinteger(L, i);
  if (off < 0)
    luaL_argerror(L, i, "offset must not be negative");
  return (int64_t)off;
}

/* core.fs_open(path, flags|nil, mode|nil, cb) -> cb(file) */
static int fs_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int flags = check_flags(L, 2);
  int mode = check_mode(L, 3, 0666);
  fs_req_t *r = begin(L, OP_OPEN, 0, 4);
  return submit(L, r, uv_fs_open(LOOP(r), &r->req, path, flags, mode, on_done));
}

/* core.fs_read(file_or_fd, size|nil, offset|nil, cb) -> cb(string) */
static int fs_read(lua_State *L) {
  fs_file_t *file;
  uv_file fd = check_target(L, 1, &file);
  lua_Integer size = luaL_optinteger(L, 2, DEFAULT_READ);
  int64_t off = check_offset(L, 3);
  uv_buf_t buf;
  fs_req_t *r;
  if (size < 0)
    luaL_argerror(L, 2, "size must not be negative");
  if (size > MAX_IO)
    size = MAX_IO;
  r = begin(L, OP_READ, (size_t)size, 4);
  buf = uv_buf_init(r->data, (unsigned)size);
  use_file(r, file);
  return submit(L, r, uv_fs_read(LOOP(r), &r->req, fd, &buf, 1, off, on_done));
}

/* core.fs_write(file_or_fd, data, offset|nil, cb) -> cb(bytes written).
 * The data is copied: the request may outlive the Lua string. */
static int fs_write(lua_State *L) {
  fs_file_t *file;
  uv_file fd = check_target(L, 1, &file);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  int64_t off = check_offset(L, 3);
  uv_buf_t buf;
  fs_req_t *r;
  if (len > MAX_IO)
    len = MAX_IO; /* a short write: the caller writes the rest */
  r = begin(L, OP_WRITE, len, 4);
  memcpy(r->data, data, len);
  buf = uv_buf_init(r->data, (unsigned)len);
  use_file(r, file);
  return submit(L, r, uv_fs_write(LOOP(r), &r->req, fd, &buf, 1, off, on_done));
}

/* core.fs_fstat(file_or_fd, cb), fs_fsync(file_or_fd, cb),
 * fs_ftruncate(file_or_fd, length|nil, cb) */
static int fs_fstat(lua_State *L) {
  fs_file_t *file;
  uv_file fd = check_target(L, 1, &file);
  fs_req_t *r = begin(L, OP_STAT, 0, 2);
  use_file(r, file);
  return submit(L, r, uv_fs_fstat(LOOP(r), &r->req, fd, on_done));
}

static int fs_fsync(lua_State *L) {
  fs_file_t *file;
  uv_file fd = check_target(L, 1, &file);
  fs_req_t *r = begin(L, OP_DONE, 0, 2);
  use_file(r, file);
  return submit(L, r, uv_fs_fsync(LOOP(r), &r->req, fd, on_done));
}

static int fs_ftruncate(lua_State *L) {
  fs_file_t *file;
  uv_file fd = check_target(L, 1, &file);
  lua_Integer len = luaL_optinteger(L, 2, 0);
  fs_req_t *r;
  if (len < 0)
    luaL_argerror(L, 2, "length must not be negative");
  r = begin(L, OP_DONE, 0, 3);
  use_file(r, file);
  return submit(L, r,
                uv_fs_ftruncate(LOOP(r), &r->req, fd, (int64_t)len, on_done));
}

/* core.fs_close(file_or_fd) -> true | nil, err, code: never waits (a
 * synchronous close(2) on the loop thread, or a deferred one). */
static int fs_close(lua_State *L) {
  fs_file_t *unused;
  uv_file fd;
  int err;
  if (synchro__test_udata(L, 1, FILE_MT) != NULL)
    return file_close(L);
  fd = check_target(L, 1, &unused);
  err = close_fd(&synchro__loop_of(L)->loop, fd);
  if (err < 0)
    return synchro__push_uv_error(L, err);
  lua_pushboolean(L, 1);
  return 1;
}

/* Requests on one path, core.fs_<op>(path, cb): stat, lstat, scandir,
 * rmdir, unlink, realpath, readlink, mkdtemp. */
static int path_op(lua_State *L, int kind,
                   int (*op)(uv_loop_t *, uv_fs_t *, const char *, uv_fs_cb)) {
  const char *path = luaL_checkstring(L, 1);
  fs_req_t *r = begin(L, kind, 0, 2);
  return submit(L, r, op(LOOP(r), &r->req, path, on_done));
}

static int scandir_op(uv_loop_t *loop, uv_fs_t *req, const char *path,
                      uv_fs_cb cb) {
  return uv_fs_scandir(loop, req, path, 0, cb);
}

static int fs_stat(lua_State *L) { return path_op(L, OP_STAT, uv_fs_stat); }
static int fs_lstat(lua_State *L) { return path_op(L, OP_STAT, uv_fs_lstat); }
static int fs_rmdir(lua_State *L) { return path_op(L, OP_DONE, uv_fs_rmdir); }
static int fs_unlink(lua_State *L) { return path_op(L, OP_DONE, uv_fs_unlink); }
static int fs_realpath(lua_State *L) {
  return path_op(L, OP_PTR, uv_fs_realpath);
}
static int fs_readlink(lua_State *L) {
  return path_op(L, OP_PTR, uv_fs_readlink);
}
static int fs_mkdtemp(lua_State *L) {
  return path_op(L, OP_PATH, uv_fs_mkdtemp);
}
static int fs_scandir(lua_State *L) {
  return path_op(L, OP_SCANDIR, scandir_op);
}

/* core.fs_mkdir(path, mode|nil, cb), fs_rename(from, to, cb),
 * fs_symlink(target, path, cb) */
static int fs_mkdir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int mode = check_mode(L, 2, 0777);
  fs_req_t *r = begin(L, OP_DONE, 0, 3);
  return submit(L, r, uv_fs_mkdir(LOOP(r), &r->req, path, mode, on_done));
}

static int fs_rename(lua_State *L) {
  const char *from = luaL_checkstring(L, 1);
  const char *to = luaL_checkstring(L, 2);
  fs_req_t *r = begin(L, OP_DONE, 0, 3);
  return submit(L, r, uv_fs_rename(LOOP(r), &r->req, from, to, on_done));
}

static int fs_symlink(lua_State *L) {
  const char *target = luaL_checkstring(L, 1);
  const char *path = luaL_checkstring(L, 2);
  fs_req_t *r = begin(L, OP_DONE, 0, 3);
  return submit(L, r,
                uv_fs_symlink(LOOP(r), &r->req, target, path, 0, on_done));
}

static void set_flag(lua_State *L, const char *name, int value) {
  lua_pushinteger(L, value);
  lua_setfield(L, -2, name);
}

void synchro__fs_register(lua_State *L) {
  static const luaL_Reg file_methods[] = {
      {"close", file_close}, {"fileno", file_fileno}, {NULL, NULL}};
  static const luaL_Reg fns[] = {{"fs_open", fs_open},
                                 {"fs_read", fs_read},
                                 {"fs_write", fs_write},
                                 {"fs_fstat", fs_fstat},
                                 {"fs_fsync", fs_fsync},
                                 {"fs_ftruncate", fs_ftruncate},
                                 {"fs_close", fs_close},
                                 {"fs_stat", fs_stat},
                                 {"fs_lstat", fs_lstat},
                                 {"fs_scandir", fs_scandir},
                                 {"fs_mkdir", fs_mkdir},
                                 {"fs_rmdir", fs_rmdir},
                                 {"fs_unlink", fs_unlink},
                                 {"fs_rename", fs_rename},
                                 {"fs_realpath", fs_realpath},
                                 {"fs_readlink", fs_readlink},
                                 {"fs_symlink", fs_symlink},
                                 {"fs_mkdtemp", fs_mkdtemp},
                                 {NULL, NULL}};
  const luaL_Reg *f;
  if (luaL_newmetatable(L, FILE_MT)) {
    luaL_newlib(L, file_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, file_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, file_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, file_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  /* core.fs_file_methods: fs.lua adds the methods written in Lua */
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "fs_file_methods");
  lua_pop(L, 1);
  for (f = fns; f->name != NULL; f++) {
    lua_pushcfunction(L, f->func);
    lua_setfield(L, -2, f->name);
  }
  lua_createtable(L, 0, 12);
  set_flag(L, "O_RDONLY", UV_FS_O_RDONLY);
  set_flag(L, "O_WRONLY", UV_FS_O_WRONLY);
  set_flag(L, "O_RDWR", UV_FS_O_RDWR);
  set_flag(L, "O_CREAT", UV_FS_O_CREAT);
  set_flag(L, "O_EXCL", UV_FS_O_EXCL);
  set_flag(L, "O_TRUNC", UV_FS_O_TRUNC);
  set_flag(L, "O_APPEND", UV_FS_O_APPEND);
  set_flag(L, "O_SYNC", UV_FS_O_SYNC);
  set_flag(L, "O_DSYNC", UV_FS_O_DSYNC);
  set_flag(L, "O_NOFOLLOW", UV_FS_O_NOFOLLOW);
  set_flag(L, "O_DIRECTORY", UV_FS_O_DIRECTORY);
  set_flag(L, "O_NONBLOCK", UV_FS_O_NONBLOCK);
  lua_setfield(L, -2, "fs_flags");
}
