/* skein-proxy map layouts: the one C definition of every map the programs share.
 *
 * The Rust side mirrors each struct once, as #[repr(C)] types in src/maps.rs, with
 * tests that check the sizes match (SKEIN_*_SIZE below). Every map is pinned by name
 * under the proxy's pin dir (/sys/fs/bpf/skein/<node>/), so the two objects
 * (cgroup_sock.c, tc_nodeport.c) share them and a restarted proxy finds them again.
 *
 *   skein_svc     (vip, port, proto, scope) -> service frontend: group, backend count, flags
 *   skein_be      (group, slot)             -> backend (ip, port, node-local?)
 *   skein_maglev  group                     -> Maglev lookup table (slot per hash bucket)
 *   skein_names   group                     -> "namespace/name:port" (for resync and humans)
 *   skein_sock_rn (socket cookie, backend)  -> VIP the application asked for
 *   skein_aff     (client, group)           -> sessionAffinity: chosen slot and last use
 *   skein_ct      flow 5-tuple              -> backend and NAT of a NodePort flow (tc)
 *   skein_revnat  reply 5-tuple             -> the tuple to restore on the reply path (tc)
 *   skein_cfg     0                         -> node address for SNAT
 *   skein_conns   group                     -> new connections counted (per CPU)
 *   skein_podnet  0                         -> pod routing: cluster network, node subnet, bridge
 *   skein_pods    pod IPv4                  -> its host-side veth and MAC (learned at tc)
 */
#pragma once

#define SKEIN_MAGLEV_M 1021      /* prime; even shares for up to ~10 backends per service */
#define SKEIN_MAX_GROUPS 65536   /* group ids are below this (skein_conns is an array) */
#define SKEIN_NAME_LEN 64

#define SKEIN_SCOPE_CLUSTER 0    /* matched at the socket (ClusterIP, externalIPs from pods) */
#define SKEIN_SCOPE_EXTERNAL 1   /* matched at tc on the uplink (NodePort, externalIPs, LB) */

#define SKEIN_SVC_F_AFFINITY 1   /* sessionAffinity: ClientIP */
#define SKEIN_SVC_F_LOCAL 2      /* externalTrafficPolicy: Local (backends are local only) */

#define SKEIN_BE_F_LOCAL 1       /* the backend runs on this node */

struct skein_svc_key {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 scope;
};

struct skein_svc_value {
	__u32 group;
	__u16 count;             /* ready backends; 0 = refuse */
	__u16 flags;
	__u32 affinity_timeout;  /* seconds */
};

struct skein_be_key {
	__u32 group;
	__u32 slot;
};

struct skein_backend {
	__be32 addr;
	__be16 port;
	__u8 flags;
	__u8 pad;
};

struct skein_maglev {
	__u16 slot[SKEIN_MAGLEV_M];
};

struct skein_name {
	char name[SKEIN_NAME_LEN];
};

struct skein_sock_rn_key {
	__u64 cookie;
	__be32 addr;
	__be16 port;
	__u16 pad;
};

struct skein_sock_rn_value {
	__be32 addr;
	__be16 port;
	__u16 pad;
};

struct skein_aff_key {
	__u64 client;            /* netns cookie at the socket, client IPv4 at tc */
	__u32 group;
	__u32 pad;
};

struct skein_aff_value {
	__u64 last_used_ns;
	__be32 addr;
	__be16 port;
	__u16 slot;
};

struct skein_tuple {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct skein_ct_value {
	__be32 backend_addr;
	__be16 backend_port;
	__be16 nat_port;         /* SNAT source port, when nat_addr != 0 */
	__be32 nat_addr;         /* SNAT source address (remote backend), or 0 */
	__u32 group;
	__u64 last_seen_ns;
};

struct skein_revnat_value {
	struct skein_tuple to;   /* the reply's tuple after restoring it */
	__u64 last_seen_ns;
};

struct skein_cfg {
	__be32 node_addr;
	__u32 pad;
};

/* Pod routing (off while `enabled` is 0): pod-to-pod packets between nodes skip the
 * bridge and the nodes' forwarding path. Addresses and masks in network byte order. */
struct skein_route_cfg {
	__u32 enabled;
	__u32 bridge_ifindex;    /* the pods' bridge (cni0) */
	__u32 uplink_ifindex;    /* the only device pod traffic is routed to (eth0) */
	__be32 cluster_net;      /* the cluster's pod network (flannel's Network) */
	__be32 cluster_mask;
	__be32 node_net;         /* this node's pod subnet (the bridge's address) */
	__be32 node_mask;
};

/* A local pod as its own packets show it: the host-side veth they came in on and the
 * pod's MAC. */
struct skein_pod {
	__u32 ifindex;
	__u8 mac[6];
	__u16 pad;
};

#define SKEIN_SVC_KEY_SIZE 8
#define SKEIN_SVC_VALUE_SIZE 12
#define SKEIN_BE_KEY_SIZE 8
#define SKEIN_BACKEND_SIZE 8
#define SKEIN_MAGLEV_SIZE (2 * SKEIN_MAGLEV_M)
#define SKEIN_SOCK_RN_KEY_SIZE 16
#define SKEIN_SOCK_RN_VALUE_SIZE 8
#define SKEIN_AFF_KEY_SIZE 16
#define SKEIN_AFF_VALUE_SIZE 16
#define SKEIN_TUPLE_SIZE 16
#define SKEIN_CT_VALUE_SIZE 24
#define SKEIN_REVNAT_VALUE_SIZE 24
#define SKEIN_CFG_SIZE 8
#define SKEIN_ROUTE_CFG_SIZE 28
#define SKEIN_POD_SIZE 12

_Static_assert(sizeof(struct skein_svc_key) == SKEIN_SVC_KEY_SIZE, "svc key");
_Static_assert(sizeof(struct skein_svc_value) == SKEIN_SVC_VALUE_SIZE, "svc value");
_Static_assert(sizeof(struct skein_be_key) == SKEIN_BE_KEY_SIZE, "be key");
_Static_assert(sizeof(struct skein_backend) == SKEIN_BACKEND_SIZE, "backend");
_Static_assert(sizeof(struct skein_maglev) == SKEIN_MAGLEV_SIZE, "maglev");
_Static_assert(sizeof(struct skein_sock_rn_key) == SKEIN_SOCK_RN_KEY_SIZE, "sock rn key");
_Static_assert(sizeof(struct skein_sock_rn_value) == SKEIN_SOCK_RN_VALUE_SIZE, "sock rn value");
_Static_assert(sizeof(struct skein_aff_key) == SKEIN_AFF_KEY_SIZE, "aff key");
_Static_assert(sizeof(struct skein_aff_value) == SKEIN_AFF_VALUE_SIZE, "aff value");
_Static_assert(sizeof(struct skein_tuple) == SKEIN_TUPLE_SIZE, "tuple");
_Static_assert(sizeof(struct skein_ct_value) == SKEIN_CT_VALUE_SIZE, "ct value");
_Static_assert(sizeof(struct skein_revnat_value) == SKEIN_REVNAT_VALUE_SIZE, "revnat value");
_Static_assert(sizeof(struct skein_cfg) == SKEIN_CFG_SIZE, "cfg");
_Static_assert(sizeof(struct skein_route_cfg) == SKEIN_ROUTE_CFG_SIZE, "route cfg");
_Static_assert(sizeof(struct skein_pod) == SKEIN_POD_SIZE, "pod");

#ifndef SKEIN_LAYOUT_ONLY

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct skein_svc_key);
	__type(value, struct skein_svc_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_svc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct skein_be_key);
	__type(value, struct skein_backend);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_be SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct skein_maglev);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SKEIN_MAX_GROUPS);
	__type(key, __u32);
	__type(value, struct skein_name);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_names SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct skein_sock_rn_key);
	__type(value, struct skein_sock_rn_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_sock_rn SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct skein_aff_key);
	__type(value, struct skein_aff_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_aff SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct skein_tuple);
	__type(value, struct skein_ct_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct skein_tuple);
	__type(value, struct skein_revnat_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct skein_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SKEIN_MAX_GROUPS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct skein_route_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_podnet SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __be32);
	__type(value, struct skein_pod);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_pods SEC(".maps");

static __always_inline void skein_count_conn(__u32 group)
{
	__u64 *n = bpf_map_lookup_elem(&skein_conns, &group);
	if (n)
		*n += 1;
}

#endif
