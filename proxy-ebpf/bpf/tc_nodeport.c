// SPDX-License-Identifier: GPL-2.0
/* NodePort, externalIPs and LoadBalancer IPs at tc on the node's uplink.
 *
 * ingress:  reply of a SNAT'd flow (skein_revnat)  -> restore (frontend -> client), send back out
 *           known flow (skein_ct)                  -> same backend, same NAT as before
 *           new flow to a frontend (skein_svc, scope external)
 *               no backends -> drop
 *               Maglev pick (or affinity) -> DNAT to the backend; SNAT to the node address
 *               when the backend is on another node; record ct + revnat
 *           then: SNAT'd -> route the rewritten packet (fib lookup + redirect);
 *                 local backend -> up the node's stack (its conntrack sees the flow)
 *           anything else -> pod routing (below), else up the node's stack
 * egress:   reply of a local backend (skein_revnat) -> source back to the frontend
 *
 * Pod routing (skein_podnet.enabled): what the bridge and the node's forwarding would do
 * for pod-to-pod traffic between nodes, done here in one step.
 *   pod veth ingress (skein_tc_pod): learn the pod (IP -> veth, MAC); a packet to a pod
 *       of another node (cluster network, not this node's subnet) whose route goes out
 *       of the uplink (host-gw, DirectRouting) is sent there straight from a FIB lookup.
 *       Routes into the VXLAN device keep the kernel path: measured, the shortcut made
 *       vxlan pod-to-pod slower, not faster.
 *   uplink ingress: a packet from a pod to a pod of this node, whose learned veth and
 *       MAC the FIB and the bridge's neighbour still confirm, goes straight into the
 *       pod's namespace (bpf_redirect_peer).
 * Everything else (the node itself, the outside, Services, masquerade) takes the normal
 * path, and so does a pod not learned yet.
 */
#include "skein_common.h"

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define ETH_P_IP 0x0800
#define ETH_HLEN 14
#define IP_CSUM_OFF (ETH_HLEN + 10)
#define IP_SRC_OFF (ETH_HLEN + 12)
#define IP_DST_OFF (ETH_HLEN + 16)
#define IP_TTL_OFF (ETH_HLEN + 8)
#define L4_OFF (ETH_HLEN + 20)
#define TCP_CSUM_OFF (L4_OFF + 16)
#define UDP_CSUM_OFF (L4_OFF + 6)
#define AF_INET 2
#define NAT_PORT_MIN 32768
#define NAT_PORT_SPAN 28232
#define NAT_TRIES 8

/* A conntrack entry idle this long when a new TCP SYN arrives for its tuple belongs to
 * an old connection whose client port is being reused: the flow is balanced afresh
 * (retransmitted SYNs of one attempt come 1, 2, 4 s apart, so they keep their entry). */
#define SKEIN_CT_SYN_REUSE_NS (3ULL * 1000000000ULL)

/* Reads the IPv4 5-tuple of a TCP/UDP packet without IP options or fragments; sets
 * *syn for a TCP SYN without ACK (a connection attempt). */
static __always_inline int skein_parse(struct __sk_buff *skb, struct skein_tuple *t, int *syn)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return -1;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->ihl != 5)
		return -1;
	if (ip->frag_off & bpf_htons(0x3fff))
		return -1;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return -1;
	__be16 *ports = (void *)(ip + 1);
	if ((void *)(ports + 2) > data_end)
		return -1;
	*syn = 0;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = (void *)(ip + 1);
		if ((void *)(tcp + 1) > data_end)
			return -1;
		*syn = tcp->syn && !tcp->ack;
	}
	t->saddr = ip->saddr;
	t->daddr = ip->daddr;
	t->sport = ports[0];
	t->dport = ports[1];
	t->proto = ip->protocol;
	return 0;
}

/* Rewrites the packet from tuple `from` to tuple `to`, fixing the IP and L4 checksums. */
static __always_inline int skein_rewrite(struct __sk_buff *skb, const struct skein_tuple *from,
					 const struct skein_tuple *to)
{
	int csum_off = from->proto == IPPROTO_TCP ? TCP_CSUM_OFF : UDP_CSUM_OFF;
	__u64 mangled = from->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (from->saddr != to->saddr) {
		if (bpf_l4_csum_replace(skb, csum_off, from->saddr, to->saddr,
					mangled | BPF_F_PSEUDO_HDR | 4) ||
		    bpf_l3_csum_replace(skb, IP_CSUM_OFF, from->saddr, to->saddr, 4) ||
		    bpf_skb_store_bytes(skb, IP_SRC_OFF, &to->saddr, 4, 0))
			return -1;
	}
	if (from->daddr != to->daddr) {
		if (bpf_l4_csum_replace(skb, csum_off, from->daddr, to->daddr,
					mangled | BPF_F_PSEUDO_HDR | 4) ||
		    bpf_l3_csum_replace(skb, IP_CSUM_OFF, from->daddr, to->daddr, 4) ||
		    bpf_skb_store_bytes(skb, IP_DST_OFF, &to->daddr, 4, 0))
			return -1;
	}
	if (from->sport != to->sport) {
		if (bpf_l4_csum_replace(skb, csum_off, from->sport, to->sport, mangled | 2) ||
		    bpf_skb_store_bytes(skb, L4_OFF, &to->sport, 2, 0))
			return -1;
	}
	if (from->dport != to->dport) {
		if (bpf_l4_csum_replace(skb, csum_off, from->dport, to->dport, mangled | 2) ||
		    bpf_skb_store_bytes(skb, L4_OFF + 2, &to->dport, 2, 0))
			return -1;
	}
	return 0;
}

/* Sends a rewritten packet where the routing table says, bypassing the ingress path
 * (so a packet whose new source is this node's own address is not a martian). */
static __always_inline int skein_route(struct __sk_buff *skb, const struct skein_tuple *t)
{
	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET;
	fib.ipv4_src = t->saddr;
	fib.ipv4_dst = t->daddr;
	fib.l4_protocol = t->proto;
	fib.sport = t->sport;
	fib.dport = t->dport;
	fib.ifindex = skb->ingress_ifindex;

	long rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (bpf_skb_store_bytes(skb, 0, fib.dmac, 6, 0) ||
		    bpf_skb_store_bytes(skb, 6, fib.smac, 6, 0))
			return TC_ACT_SHOT;
		return bpf_redirect(fib.ifindex, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
	return TC_ACT_OK;
}

static __always_inline int skein_in(__be32 addr, __be32 net, __be32 mask)
{
	return (addr & mask) == net;
}

static __always_inline int skein_mac_eq(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] &&
	       a[5] == b[5];
}

/* Pod routing's config when it is on (NULL otherwise, or when the packet is not IPv4),
 * with *eth set to the packet's Ethernet header, a whole IPv4 header behind it. */
static __always_inline struct skein_route_cfg *skein_podnet_ipv4(struct __sk_buff *skb,
								 struct ethhdr **eth)
{
	__u32 zero = 0;
	struct skein_route_cfg *rc = bpf_map_lookup_elem(&skein_podnet, &zero);
	if (!rc || !rc->enabled)
		return NULL;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *e = data;
	if ((void *)(e + 1) > data_end || e->h_proto != bpf_htons(ETH_P_IP) ||
	    (void *)(e + 1) + sizeof(struct iphdr) > data_end)
		return NULL;
	*eth = e;
	return rc;
}

/* The hop the node's forwarding would have made: TTL down by one (checksum fixed), new
 * destination and source MACs. */
static __always_inline int skein_hop(struct __sk_buff *skb, const __u8 *dmac, const __u8 *smac)
{
	__be16 old, new;
	if (bpf_skb_load_bytes(skb, IP_TTL_OFF, &old, 2))
		return -1;
	new = old - bpf_htons(0x0100);
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old, new, 2) ||
	    bpf_skb_store_bytes(skb, IP_TTL_OFF, &new, 2, 0) ||
	    bpf_skb_store_bytes(skb, 0, dmac, 6, 0) || bpf_skb_store_bytes(skb, 6, smac, 6, 0))
		return -1;
	return 0;
}

/* Uplink ingress, after the Service checks: a pod-to-pod packet for a pod of this node
 * goes straight into its namespace, when the routing table still sends that address to
 * the bridge, the bridge's neighbour entry has the learned MAC and the learned veth still
 * exists. Otherwise the normal path (TC_ACT_OK). */
static __always_inline int skein_to_pod(struct __sk_buff *skb)
{
	struct ethhdr *eth;
	struct skein_route_cfg *rc = skein_podnet_ipv4(skb, &eth);
	if (!rc)
		return TC_ACT_OK;
	struct iphdr *ip = (void *)(eth + 1);
	if (ip->ttl <= 1)
		return TC_ACT_OK;
	__be32 saddr = ip->saddr, daddr = ip->daddr;
	if (!skein_in(daddr, rc->node_net, rc->node_mask) ||
	    !skein_in(saddr, rc->cluster_net, rc->cluster_mask) ||
	    skein_in(saddr, rc->node_net, rc->node_mask))
		return TC_ACT_OK;
	struct skein_pod *pod = bpf_map_lookup_elem(&skein_pods, &daddr);
	if (!pod)
		return TC_ACT_OK;
	struct skein_pod to = *pod;

	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET;
	fib.ipv4_src = saddr;
	fib.ipv4_dst = daddr;
	fib.ifindex = skb->ingress_ifindex;
	if (bpf_fib_lookup(skb, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS ||
	    fib.ifindex != rc->bridge_ifindex || !skein_mac_eq(fib.dmac, to.mac))
		return TC_ACT_OK;
	/* The learned veth must still exist (a pod gone, its address not re-learned yet):
	 * a lookup from a device that is gone fails with -ENODEV. */
	struct bpf_fib_lookup alive = {};
	alive.family = AF_INET;
	alive.ipv4_src = saddr;
	alive.ipv4_dst = daddr;
	alive.ifindex = to.ifindex;
	if (bpf_fib_lookup(skb, &alive, sizeof(alive), BPF_FIB_LOOKUP_OUTPUT) < 0) {
		bpf_map_delete_elem(&skein_pods, &daddr);
		return TC_ACT_OK;
	}
	if (skein_hop(skb, to.mac, fib.smac))
		return TC_ACT_SHOT;
	return bpf_redirect_peer(to.ifindex, 0);
}

static __always_inline __u32 skein_flow_hash(const struct skein_tuple *t)
{
	/* The destination address is left out: every node picks the same backend for a
	 * client's flow whichever node (or external IP) it arrives through. */
	__u32 h = t->saddr * 0x9e3779b1u;
	h ^= ((__u32)t->sport << 16 | t->dport) + 0x7f4a7c15u + (h << 6) + (h >> 2);
	h ^= t->proto;
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

static __always_inline int skein_new_flow(struct __sk_buff *skb, const struct skein_tuple *t,
					  struct skein_ct_value *ct)
{
	struct skein_svc_key key = {
		.addr = t->daddr, .port = t->dport, .proto = t->proto, .scope = SKEIN_SCOPE_EXTERNAL,
	};
	struct skein_svc_value *svc = bpf_map_lookup_elem(&skein_svc, &key);
	if (!svc)
		return 1;
	if (svc->count == 0)
		return -1;

	__u32 group = svc->group;
	__u32 fresh = 0;
	struct skein_maglev *tbl = bpf_map_lookup_elem(&skein_maglev, &group);
	if (!tbl)
		return -1;
	__u32 bucket = skein_flow_hash(t) % SKEIN_MAGLEV_M;
	/* The verifier does not follow `%`: hide the value from clang so the bound check
	 * it would drop as redundant stays, and the verifier sees the index bounded. */
	asm volatile("" : "+r"(bucket));
	if (bucket >= SKEIN_MAGLEV_M)
		return -1;
	fresh = tbl->slot[bucket];
	struct skein_backend *be = skein_pick(svc, t->saddr, fresh);
	if (!be)
		return -1;

	__u64 now = bpf_ktime_get_ns();
	ct->backend_addr = be->addr;
	ct->backend_port = be->port;
	ct->nat_addr = 0;
	ct->nat_port = 0;
	ct->group = group;
	ct->last_seen_ns = now;

	struct skein_revnat_value rn = {
		.to = { .saddr = t->daddr, .daddr = t->saddr, .sport = t->dport, .dport = t->sport,
			.proto = t->proto },
		.last_seen_ns = now,
	};
	struct skein_tuple reply = {
		.saddr = be->addr, .sport = be->port, .proto = t->proto,
		.daddr = t->saddr, .dport = t->sport,
	};
	if (!(be->flags & SKEIN_BE_F_LOCAL)) {
		__u32 zero = 0;
		struct skein_cfg *cfg = bpf_map_lookup_elem(&skein_cfg, &zero);
		if (!cfg || !cfg->node_addr)
			return -1;
		reply.daddr = cfg->node_addr;
		int claimed = 0;
		__u16 port = bpf_ntohs(t->sport);
		for (int i = 0; i < NAT_TRIES; i++) {
			reply.dport = bpf_htons(port);
			if (bpf_map_update_elem(&skein_revnat, &reply, &rn, BPF_NOEXIST) == 0) {
				claimed = 1;
				break;
			}
			port = NAT_PORT_MIN + bpf_get_prandom_u32() % NAT_PORT_SPAN;
		}
		if (!claimed)
			return -1;
		ct->nat_addr = cfg->node_addr;
		ct->nat_port = reply.dport;
	} else {
		bpf_map_update_elem(&skein_revnat, &reply, &rn, BPF_ANY);
	}
	bpf_map_update_elem(&skein_ct, t, ct, BPF_ANY);
	skein_count_conn(group);
	return 0;
}

SEC("classifier")
int skein_tc_ingress(struct __sk_buff *skb)
{
	struct skein_tuple t = {};
	int syn = 0;
	if (skein_parse(skb, &t, &syn))
		return skein_to_pod(skb);

	struct skein_revnat_value *rn = bpf_map_lookup_elem(&skein_revnat, &t);
	if (rn) {
		/* A reply to a flow this node SNAT'd: back to the client, from the frontend. */
		struct skein_tuple to = rn->to;
		rn->last_seen_ns = bpf_ktime_get_ns();
		if (skein_rewrite(skb, &t, &to))
			return TC_ACT_SHOT;
		return skein_route(skb, &to);
	}

	struct skein_ct_value ctv = {};
	struct skein_ct_value *ct = bpf_map_lookup_elem(&skein_ct, &t);
	__u64 now = bpf_ktime_get_ns();
	if (ct && syn && now - ct->last_seen_ns > SKEIN_CT_SYN_REUSE_NS)
		ct = NULL; /* a new connection reusing an old tuple: balance it afresh */
	if (ct) {
		ct->last_seen_ns = now;
		ctv = *ct;
	} else {
		int rc = skein_new_flow(skb, &t, &ctv);
		if (rc > 0)
			return skein_to_pod(skb);
		if (rc < 0)
			return TC_ACT_SHOT;
	}

	struct skein_tuple to = t;
	to.daddr = ctv.backend_addr;
	to.dport = ctv.backend_port;
	if (ctv.nat_addr) {
		to.saddr = ctv.nat_addr;
		to.sport = ctv.nat_port;
	}
	if (skein_rewrite(skb, &t, &to))
		return TC_ACT_SHOT;
	if (!ctv.nat_addr)
		/* A local backend, client address kept: the packet goes up the node's own
		 * stack, so its conntrack sees the flow from its first packet. Redirected past
		 * it, the backend's replies would reach the node's netfilter as a flow it never
		 * saw start, which flannel's masquerade rule (pod to outside) picks up and
		 * rewrites, and the client resets the connection. */
		return TC_ACT_OK;
	return skein_route(skb, &to);
}

SEC("classifier")
int skein_tc_egress(struct __sk_buff *skb)
{
	struct skein_tuple t = {};
	int syn = 0;
	if (skein_parse(skb, &t, &syn))
		return TC_ACT_OK;
	struct skein_revnat_value *rn = bpf_map_lookup_elem(&skein_revnat, &t);
	if (!rn)
		return TC_ACT_OK;
	/* A local backend's reply on its way out: only the source goes back to the frontend. */
	struct skein_tuple to = rn->to;
	rn->last_seen_ns = bpf_ktime_get_ns();
	if (skein_rewrite(skb, &t, &to))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

/* Ingress of a pod's host-side veth (pod routing): learns the pod, and routes a packet
 * for a pod of another node straight to the device its route names. */
SEC("classifier")
int skein_tc_pod(struct __sk_buff *skb)
{
	struct ethhdr *eth;
	struct skein_route_cfg *rc = skein_podnet_ipv4(skb, &eth);
	if (!rc)
		return TC_ACT_OK;
	struct iphdr *ip = (void *)(eth + 1);
	__be32 saddr = ip->saddr, daddr = ip->daddr;
	/* Only a source in this node's pod subnet is a pod (anything else, spoofed or not,
	 * is left to the node's stack). */
	if (!skein_in(saddr, rc->node_net, rc->node_mask))
		return TC_ACT_OK;
	struct skein_pod *known = bpf_map_lookup_elem(&skein_pods, &saddr);
	if (!known || known->ifindex != skb->ingress_ifindex ||
	    !skein_mac_eq(known->mac, eth->h_source)) {
		struct skein_pod learned = { .ifindex = skb->ingress_ifindex };
		__builtin_memcpy(learned.mac, eth->h_source, 6);
		bpf_map_update_elem(&skein_pods, &saddr, &learned, BPF_ANY);
	}
	if (ip->ttl <= 1 || !skein_in(daddr, rc->cluster_net, rc->cluster_mask) ||
	    skein_in(daddr, rc->node_net, rc->node_mask))
		return TC_ACT_OK;

	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET;
	fib.tos = ip->tos;
	fib.l4_protocol = ip->protocol;
	/* A GSO packet is segmented for the device later: no MTU check on its total length. */
	fib.tot_len = skb->gso_size ? 0 : bpf_ntohs(ip->tot_len);
	fib.ipv4_src = saddr;
	fib.ipv4_dst = daddr;
	fib.ifindex = rc->bridge_ifindex;
	if (bpf_fib_lookup(skb, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS ||
	    fib.ifindex != rc->uplink_ifindex)
		return TC_ACT_OK;
	if (skein_hop(skb, fib.dmac, fib.smac))
		return TC_ACT_SHOT;
	return bpf_redirect(fib.ifindex, 0);
}

char _license[] SEC("license") = "GPL";
