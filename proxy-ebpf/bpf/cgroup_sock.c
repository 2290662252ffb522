// SPDX-License-Identifier: GPL-2.0
/* ClusterIP at the socket: cgroup v2 hooks on the node's pod cgroup subtree.
 *
 *   connect4 / sendmsg4   dst = (VIP, port) in skein_svc (scope cluster)?
 *                           no          -> leave it alone
 *                           no backends -> refuse (ECONNREFUSED at once)
 *                           yes         -> dst = backend, remember (cookie, backend) -> VIP
 *   recvmsg4 / getpeername4   (cookie, backend) in skein_sock_rn -> show the VIP instead
 *
 * After connect() the socket talks to the backend directly: no per-packet work at all.
 */
#include "skein_common.h"

static __always_inline int skein_sock_lb(struct bpf_sock_addr *ctx, int connected)
{
	__u32 proto = ctx->protocol;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 1;

	struct skein_svc_key key = {
		.addr = ctx->user_ip4,
		.port = (__be16)ctx->user_port,
		.proto = (__u8)proto,
		.scope = SKEIN_SCOPE_CLUSTER,
	};
	struct skein_svc_value *svc = bpf_map_lookup_elem(&skein_svc, &key);
	if (!svc)
		return 1;
	if (svc->count == 0) {
		bpf_set_retval(-SKEIN_ECONNREFUSED);
		return 0;
	}

	__u64 cookie = bpf_get_socket_cookie(ctx);
	/* A connect() takes the next backend round robin (per CPU: the service's connection
	 * counter on this CPU); an unconnected UDP socket picks by its cookie so that all its
	 * datagrams to one VIP reach the same backend. */
	__u32 fresh;
	if (connected) {
		__u32 group = svc->group;
		__u64 *n = bpf_map_lookup_elem(&skein_conns, &group);
		fresh = n ? (__u32)*n : bpf_get_prandom_u32();
	} else {
		fresh = (__u32)(cookie ^ (cookie >> 32)) * 2654435761u;
	}
	struct skein_backend *be = skein_pick(svc, bpf_get_netns_cookie(ctx), fresh);
	if (!be) {
		bpf_set_retval(-SKEIN_ECONNREFUSED);
		return 0;
	}

	struct skein_sock_rn_key rk = { .cookie = cookie, .addr = be->addr, .port = be->port };
	struct skein_sock_rn_value rv = { .addr = key.addr, .port = key.port };
	bpf_map_update_elem(&skein_sock_rn, &rk, &rv, BPF_ANY);
	if (connected || proto == IPPROTO_UDP)
		skein_count_conn(svc->group);

	ctx->user_ip4 = be->addr;
	ctx->user_port = (__u32)be->port;
	return 1;
}

SEC("cgroup/connect4")
int skein_connect4(struct bpf_sock_addr *ctx)
{
	return skein_sock_lb(ctx, 1);
}

SEC("cgroup/sendmsg4")
int skein_sendmsg4(struct bpf_sock_addr *ctx)
{
	return skein_sock_lb(ctx, 0);
}

static __always_inline void skein_sock_revnat(struct bpf_sock_addr *ctx)
{
	struct skein_sock_rn_key rk = {
		.cookie = bpf_get_socket_cookie(ctx),
		.addr = ctx->user_ip4,
		.port = (__be16)ctx->user_port,
	};
	struct skein_sock_rn_value *rv = bpf_map_lookup_elem(&skein_sock_rn, &rk);
	if (rv) {
		ctx->user_ip4 = rv->addr;
		ctx->user_port = (__u32)rv->port;
	}
}

SEC("cgroup/recvmsg4")
int skein_recvmsg4(struct bpf_sock_addr *ctx)
{
	skein_sock_revnat(ctx);
	return 1;
}

SEC("cgroup/getpeername4")
int skein_getpeername4(struct bpf_sock_addr *ctx)
{
	skein_sock_revnat(ctx);
	return 1;
}

char _license[] SEC("license") = "GPL";
