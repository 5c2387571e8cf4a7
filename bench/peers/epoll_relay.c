// epoll_relay: the floor of this benchmark, not a product. A single-threaded
// epoll relay in C speaking the seed protocol (v1) with nothing else: no
// limits, no timeouts, no logging. Names: a small hash table, one FIFO of
// parked servers per name (names are never forgotten: a floor). A parked
// server that hangs up leaves its queue.
// Data: one shared 256 KiB read buffer; what a peer cannot take yet waits in
// a buffer of its own while the other side is not read (backpressure), and
// each end of stream is carried as a half-close. A side that has nothing to
// wait for is taken out of epoll, so that a hang-up (EPOLLHUP, reported even
// with no events asked for) neither spins the loop nor has it read a side
// whose peer still owes bytes: reading then lost the bytes owed (the
// 2,968 bytes lost both ways once).
// Build: gcc -O2 -o epoll_relay epoll_relay.c   Run: ./epoll_relay CLIENT_PORT SERVER_PORT
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum kind { LISTEN_SERVERS, LISTEN_CLIENTS, SERVER_HELLO, CLIENT_HELLO, PARKED, DATA, DEAD };

struct name;

struct conn {
  int fd;
  enum kind kind;
  int got;             // handshake bytes read
  char line[512];      // handshake bytes
  struct conn *peer;   // the other side of the pair
  struct conn *next;   // parked FIFO of its name
  struct name *name;   // where it is parked
  char *pending;       // bytes read from the peer that this fd did not take yet
  size_t pending_len, pending_off;
  unsigned watched;    // events asked of epoll; 0: not in epoll
  int in_epoll;
  int eof;             // this side sent its end of stream
};

struct name {
  struct name *next;   // hash chain
  struct conn *head, *tail;
  size_t len;
  char text[];
};

#define BUCKETS 4096
static struct name *names[BUCKETS];
static int ep;
static char buf[256 * 1024];

static struct name *lookup(const char *s, size_t len, int create) {
  unsigned h = 2166136261u;  // FNV-1a
  for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  struct name **slot = &names[h % BUCKETS];
  for (struct name *n = *slot; n; n = n->next)
    if (n->len == len && !memcmp(n->text, s, len)) return n;
  if (!create) return NULL;
  struct name *n = calloc(1, sizeof *n + len);
  memcpy(n->text, s, len);
  n->len = len;
  n->next = *slot;
  *slot = n;
  return n;
}

static void watch(struct conn *c, unsigned events) {
  struct epoll_event e = {.events = events, .data.ptr = c};
  if (!events) {
    if (c->in_epoll) epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, &e);
    c->in_epoll = 0;
  } else if (!c->in_epoll) {
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
    c->in_epoll = 1;
  } else if (events != c->watched) {
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
  }
  c->watched = events;
}

// Reads `c` while it has not ended and its peer owes nothing; writes while `c` is owed.
static void rewatch(struct conn *c) {
  if (c->kind != DATA) return;
  watch(c, (!c->eof && !c->peer->pending ? EPOLLIN : 0) | (c->pending ? EPOLLOUT : 0));
}

static int listen_on(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 4096)) { perror("listen"); exit(1); }
  return fd;
}

static void kill_conn(struct conn *c) {
  if (c->kind == DEAD) return;
  c->kind = DEAD;
  close(c->fd);  // leaves epoll with it
  free(c->pending);
  c->pending = NULL;
  // freed never: an epoll batch may still name it (a floor, not a product)
}

static void kill_pair(struct conn *c) {
  if (c->peer) kill_conn(c->peer);
  kill_conn(c);
}

static void maybe_done(struct conn *c) {
  struct conn *p = c->peer;
  if (c->eof && p->eof && !c->pending && !p->pending) kill_pair(c);
}

// Writes what `to` still owes; returns 1 when all is written.
static int flush(struct conn *to) {
  while (to->pending_off < to->pending_len) {
    ssize_t w = write(to->fd, to->pending + to->pending_off, to->pending_len - to->pending_off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) return 0;
    if (w < 0) { kill_pair(to); return 0; }
    to->pending_off += w;
  }
  free(to->pending);
  to->pending = NULL;
  return 1;
}

// Sends `n` bytes to `to`, after what it owes already; what it cannot take
// waits, and `from` stops being read.
static void send_to(struct conn *from, struct conn *to, const char *data, size_t n) {
  if (to->pending) {  // keep the order: behind what is owed
    to->pending = realloc(to->pending, to->pending_len + n);
    memcpy(to->pending + to->pending_len, data, n);
    to->pending_len += n;
    return;
  }
  ssize_t w = write(to->fd, data, n);
  if (w < 0 && errno != EAGAIN && errno != EINTR) { kill_pair(from); return; }
  if (w < 0) w = 0;
  if ((size_t)w == n) return;
  to->pending = malloc(n - w);
  memcpy(to->pending, data + w, n - w);
  to->pending_len = n - w;
  to->pending_off = 0;
  rewatch(from);
  rewatch(to);
}

static void carry_eof(struct conn *from) {
  from->eof = 1;
  rewatch(from);
  if (!from->peer->pending) shutdown(from->peer->fd, SHUT_WR);
  maybe_done(from);
}

static void on_data(struct conn *c, unsigned events) {
  if (c->pending && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
    if (!flush(c) || c->kind == DEAD) return;
    rewatch(c);
    rewatch(c->peer);
    if (c->peer->eof) { shutdown(c->fd, SHUT_WR); maybe_done(c); }
    return;
  }
  // a hang-up or a late event of this batch: read only what may be read now
  if (c->eof || c->peer->pending || !(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
  ssize_t r = read(c->fd, buf, sizeof buf);
  if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (r < 0) { kill_pair(c); return; }
  if (r == 0) { carry_eof(c); return; }
  send_to(c, c->peer, buf, r);
}

// The bytes after the first `lines` lines of `c`'s handshake.
static const char *after_lines(struct conn *c, int lines, size_t *rest) {
  const char *p = c->line, *end = c->line + c->got;
  for (int i = 0; i < lines; i++) p = (const char *)memchr(p, '\n', end - p) + 1;
  *rest = end - p;
  return p;
}

// The name on line `index` (0-based) of `c`'s handshake, without a trailing \r.
static struct name *name_of(struct conn *c, int index, int create) {
  size_t rest;
  const char *s = after_lines(c, index, &rest);
  size_t len = (const char *)memchr(s, '\n', rest) - s;
  if (len && s[len - 1] == '\r') len--;
  return lookup(s, len, create);
}

static void pair(struct conn *client) {
  struct name *n = name_of(client, 0, 0);
  struct conn *server = n ? n->head : NULL;
  if (!server) { (void)!write(client->fd, "OFFLINE\n", 8); kill_conn(client); return; }
  n->head = server->next;
  if (!n->head) n->tail = NULL;
  server->next = NULL;
  server->name = NULL;
  server->peer = client;
  client->peer = server;
  server->kind = client->kind = DATA;
  send_to(client, server, "CONNECTED\n", 10);
  if (client->kind == DATA) send_to(server, client, "CONNECTED\n", 10);
  size_t rest;
  // bytes the client sent after its name go to the server, and the other way
  const char *more = after_lines(client, 1, &rest);
  if (rest && client->kind == DATA) send_to(client, server, more, rest);
  more = after_lines(server, 2, &rest);
  if (rest && server->kind == DATA) send_to(server, client, more, rest);
  if (client->kind == DATA) { rewatch(server); rewatch(client); }
}

static void unpark(struct conn *c) {
  struct name *n = c->name;
  struct conn **p = &n->head, *prev = NULL;
  while (*p && *p != c) { prev = *p; p = &(*p)->next; }
  if (!*p) return;
  *p = c->next;
  if (n->tail == c) n->tail = prev;
  kill_conn(c);
}

static void on_hello(struct conn *c) {
  ssize_t r = read(c->fd, c->line + c->got, sizeof c->line - c->got);
  if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (r <= 0 || (c->got += r) == (int)sizeof c->line) { kill_conn(c); return; }
  char *nl = memchr(c->line, '\n', c->got);
  if (!nl) return;
  if (c->kind == CLIENT_HELLO) { pair(c); return; }
  if (!memchr(nl + 1, '\n', c->got - (nl + 1 - c->line))) return;  // CONNECT\n<name>\n
  struct name *n = name_of(c, 1, 1);
  c->kind = PARKED;
  c->name = n;
  // only a hang-up is watched: bytes a parked server sends wait in the kernel
  watch(c, EPOLLRDHUP);
  if (n->tail) n->tail->next = c; else n->head = c;
  n->tail = c;
}

static void on_accept(struct conn *l) {
  int fd, one = 1;
  while ((fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = calloc(1, sizeof *c);
    c->fd = fd;
    c->kind = l->kind == LISTEN_SERVERS ? SERVER_HELLO : CLIENT_HELLO;
    (void)!write(fd, c->kind == SERVER_HELLO ? "SERVER\n" : "CLIENT\n", 7);
    watch(c, EPOLLIN);
  }
}

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: epoll_relay CLIENT_PORT SERVER_PORT\n"); return 2; }
  ep = epoll_create1(0);
  struct conn servers = {.fd = listen_on(atoi(argv[2])), .kind = LISTEN_SERVERS};
  struct conn clients = {.fd = listen_on(atoi(argv[1])), .kind = LISTEN_CLIENTS};
  watch(&servers, EPOLLIN);
  watch(&clients, EPOLLIN);
  struct epoll_event ev[256];
  for (;;) {
    int n = epoll_wait(ep, ev, 256, -1);
    for (int i = 0; i < n; i++) {
      struct conn *c = ev[i].data.ptr;
      switch (c->kind) {
        case LISTEN_SERVERS: case LISTEN_CLIENTS: on_accept(c); break;
        case SERVER_HELLO: case CLIENT_HELLO: on_hello(c); break;
        case PARKED: unpark(c); break;
        case DATA: on_data(c, ev[i].events); break;
        default: break;
      }
    }
  }
}
