// epoll_relay: the floor of this benchmark, not a product. A single-threaded
// epoll relay in C speaking the seed protocol (v1) with nothing else: no
// limits, no timeouts, no names (one FIFO of parked servers), no logging.
// It shows what any relay can reach on this machine with the same driver.
// Data: one shared 256 KiB read buffer; what a peer cannot take yet waits in
// a buffer of its own while the other side is not read (backpressure), and
// each end of stream is carried as a half-close.
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

struct conn {
  int fd;
  enum kind kind;
  int got;             // handshake bytes read
  char line[512];      // handshake bytes
  struct conn *peer;   // the other side of the pair
  struct conn *next;   // parked FIFO
  char *pending;       // bytes read from the peer that this fd did not take yet
  size_t pending_len, pending_off;
  int eof;             // this side sent its end of stream
  int shut;            // this side was half-closed (its peer's end carried)
};

static int ep;
static struct conn *parked_head, *parked_tail;
static char buf[256 * 1024];

static void watch(struct conn *c, int op, unsigned events) {
  struct epoll_event e = {.events = events, .data.ptr = c};
  epoll_ctl(ep, op, c->fd, &e);
}

// Reads `c` while it has not ended and its peer owes nothing; writes while `c` is owed.
static void rewatch(struct conn *c) {
  if (c->kind != DATA) return;
  unsigned ev = (!c->eof && !c->peer->pending ? EPOLLIN : 0) | (c->pending ? EPOLLOUT : 0);
  watch(c, EPOLL_CTL_MOD, ev);
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
  close(c->fd);
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
    if (w < 0 && errno == EAGAIN) return 0;
    if (w < 0) { kill_pair(to); return 0; }
    to->pending_off += w;
  }
  free(to->pending);
  to->pending = NULL;
  return 1;
}

// Sends `n` bytes to `to`; what it cannot take waits, and `from` stops being read.
static void send_to(struct conn *from, struct conn *to, const char *data, size_t n) {
  ssize_t w = write(to->fd, data, n);
  if (w < 0 && errno != EAGAIN) { kill_pair(from); return; }
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
  if (!from->peer->pending) { shutdown(from->peer->fd, SHUT_WR); from->peer->shut = 1; }
  maybe_done(from);
}

static void on_data(struct conn *c, unsigned events) {
  if ((events & EPOLLOUT) && c->pending) {
    if (!flush(c) || c->kind == DEAD) return;
    rewatch(c);
    rewatch(c->peer);
    if (c->peer->eof) { shutdown(c->fd, SHUT_WR); c->shut = 1; maybe_done(c); }
    return;
  }
  if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || c->eof) return;
  ssize_t r = read(c->fd, buf, sizeof buf);
  if (r < 0 && errno == EAGAIN) return;
  if (r < 0) { kill_pair(c); return; }
  if (r == 0) { carry_eof(c); return; }
  send_to(c, c->peer, buf, r);
}

static void pair(struct conn *client) {
  struct conn *server = parked_head;
  if (!server) { (void)!write(client->fd, "OFFLINE\n", 8); kill_conn(client); return; }
  parked_head = server->next;
  if (!parked_head) parked_tail = NULL;
  server->peer = client;
  client->peer = server;
  server->kind = client->kind = DATA;
  send_to(client, server, "CONNECTED\n", 10);
  send_to(server, client, "CONNECTED\n", 10);
  rewatch(server);
  // bytes the client sent after its name go to the server
  char *nl = memchr(client->line, '\n', client->got);
  size_t rest = client->got - (nl + 1 - client->line);
  if (rest) send_to(client, server, nl + 1, rest);
}

static void on_hello(struct conn *c) {
  ssize_t r = read(c->fd, c->line + c->got, sizeof c->line - c->got);
  if (r < 0 && errno == EAGAIN) return;
  if (r <= 0 || (c->got += r) == (int)sizeof c->line) { kill_conn(c); return; }
  char *nl = memchr(c->line, '\n', c->got);
  if (!nl) return;
  if (c->kind == CLIENT_HELLO) { pair(c); return; }
  if (!memchr(nl + 1, '\n', c->got - (nl + 1 - c->line))) return;  // CONNECT\n<name>\n
  c->kind = PARKED;
  watch(c, EPOLL_CTL_MOD, 0);  // bytes a parked server sends wait in the kernel
  if (parked_tail) parked_tail->next = c; else parked_head = c;
  parked_tail = c;
}

static void on_accept(struct conn *l) {
  int fd, one = 1;
  while ((fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = calloc(1, sizeof *c);
    c->fd = fd;
    c->kind = l->kind == LISTEN_SERVERS ? SERVER_HELLO : CLIENT_HELLO;
    (void)!write(fd, c->kind == SERVER_HELLO ? "SERVER\n" : "CLIENT\n", 7);
    watch(c, EPOLL_CTL_ADD, EPOLLIN);
  }
}

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: epoll_relay CLIENT_PORT SERVER_PORT\n"); return 2; }
  ep = epoll_create1(0);
  struct conn servers = {.fd = listen_on(atoi(argv[2])), .kind = LISTEN_SERVERS};
  struct conn clients = {.fd = listen_on(atoi(argv[1])), .kind = LISTEN_CLIENTS};
  watch(&servers, EPOLL_CTL_ADD, EPOLLIN);
  watch(&clients, EPOLL_CTL_ADD, EPOLLIN);
  struct epoll_event ev[256];
  for (;;) {
    int n = epoll_wait(ep, ev, 256, -1);
    for (int i = 0; i < n; i++) {
      struct conn *c = ev[i].data.ptr;
      switch (c->kind) {
        case LISTEN_SERVERS: case LISTEN_CLIENTS: on_accept(c); break;
        case SERVER_HELLO: case CLIENT_HELLO: on_hello(c); break;
        case DATA: on_data(c, ev[i].events); break;
        default: break;
      }
    }
  }
}
