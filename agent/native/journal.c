/*
 * journal.node: sends log entries to journald over its native protocol (one datagram per
 * entry to /run/systemd/journal/socket), so each entry keeps its PRIORITY and fields, and
 * sd_notify messages to $NOTIFY_SOCKET (READY=1, WATCHDOG=1, STATUS=…) from the main
 * process itself, instead of a systemd-notify process per message.
 * Node has no unix datagram sockets; this is the smallest piece that gives it one.
 * Built against Node-API only (ABI-stable): packaging/stage.sh compiles it with gcc.
 *
 *   open(path: string): number     0, or the errno of socket()/the path (too long)
 *   send(entry: Buffer): number    0, or errno (EAGAIN: journald's queue is full;
 *                                  EMSGSIZE: too big for one datagram; ...). Never blocks.
 *   pending(): number              bytes sent but not yet read by journald (SIOCOUTQ), -1
 *                                  when unknown; lets the caller wait before exit so
 *                                  journald still finds the sender's unit.
 *   notify(socket: string, message: Buffer): number
 *                                  one datagram to `socket` (a path, or "@name" in the
 *                                  abstract namespace, as $NOTIFY_SOCKET says); 0 or errno
 *                                  (EAGAIN: systemd's queue is full; never blocks). Its own
 *                                  socket, opened at the first call.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <linux/sockios.h>
#include <unistd.h>
#include <node_api.h>

static int fd = -1;
static struct sockaddr_un addr;
static socklen_t addr_len;

static napi_value num(napi_env env, int v) {
  napi_value r;
  napi_create_int32(env, v, &r);
  return r;
}

/* A datagram socket in *sock, opened at the first use: 0 or errno. */
static int dgram_socket(int *sock) {
  if (*sock < 0) {
    *sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (*sock < 0) return errno;
  }
  return 0;
}

/* *a names `path` (len bytes; '@' first: the abstract namespace, no terminator); its length. */
static socklen_t unix_addr(struct sockaddr_un *a, const char *path, size_t len) {
  memset(a, 0, sizeof(*a));
  a->sun_family = AF_UNIX;
  memcpy(a->sun_path, path, len);
  if (path[0] == '@') {
    a->sun_path[0] = '\0';
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
  }
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
}

static napi_value js_open(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return num(env, EINVAL);
  char path[sizeof(addr.sun_path)];
  size_t len = 0;
  if (napi_get_value_string_utf8(env, argv[0], path, sizeof(path), &len) != napi_ok) return num(env, EINVAL);
  if (len == 0 || len >= sizeof(path) - 1) return num(env, ENAMETOOLONG);
  int rc = dgram_socket(&fd);
  if (rc) return num(env, rc);
  addr_len = unix_addr(&addr, path, len);
  return num(env, 0);
}

static napi_value js_send(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (fd < 0) return num(env, EBADF);
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return num(env, EINVAL);
  void *data = NULL;
  size_t len = 0;
  if (napi_get_buffer_info(env, argv[0], &data, &len) != napi_ok) return num(env, EINVAL);
  ssize_t n;
  do n = sendto(fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&addr, addr_len);
  while (n < 0 && errno == EINTR);
  if (n < 0) return num(env, errno);
  return num(env, (size_t)n == len ? 0 : EMSGSIZE);
}

static napi_value js_pending(napi_env env, napi_callback_info info) {
  (void)info;
  int n = 0;
  if (fd < 0) return num(env, 0);
  if (ioctl(fd, SIOCOUTQ, &n) < 0) return num(env, -1);
  return num(env, n);
}

static int notify_fd = -1;

static napi_value js_notify(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) return num(env, EINVAL);
  struct sockaddr_un to;
  char path[sizeof(to.sun_path) + 1];
  size_t len = 0;
  if (napi_get_value_string_utf8(env, argv[0], path, sizeof(path), &len) != napi_ok) return num(env, EINVAL);
  if (len < 2 || len >= sizeof(to.sun_path)) return num(env, ENAMETOOLONG);
  if (path[0] != '/' && path[0] != '@') return num(env, EINVAL);
  void *data = NULL;
  size_t dlen = 0;
  if (napi_get_buffer_info(env, argv[1], &data, &dlen) != napi_ok) return num(env, EINVAL);
  int rc = dgram_socket(&notify_fd);
  if (rc) return num(env, rc);
  socklen_t to_len = unix_addr(&to, path, len);
  ssize_t n;
  do n = sendto(notify_fd, data, dlen, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&to, to_len);
  while (n < 0 && errno == EINTR);
  if (n < 0) return num(env, errno);
  return num(env, (size_t)n == dlen ? 0 : EMSGSIZE);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"open", NULL, js_open, NULL, NULL, NULL, napi_default, NULL},
    {"send", NULL, js_send, NULL, NULL, NULL, napi_default, NULL},
    {"pending", NULL, js_pending, NULL, NULL, NULL, napi_default, NULL},
    {"notify", NULL, js_notify, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
