/* Includes and small helpers shared by the skein-proxy programs. */
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "skein_maps.h"

#define SKEIN_ECONNREFUSED 111

/* Picks the backend slot for a new connection of a service: the affinity entry when
 * sessionAffinity is on and it is still fresh and still names the same backend, else
 * `fresh` (round robin at the socket, Maglev at tc). Records the affinity when on. */
static __always_inline struct skein_backend *
skein_pick(const struct skein_svc_value *svc, __u64 client, __u32 fresh)
{
	struct skein_be_key bk = { .group = svc->group, .slot = fresh % svc->count };
	struct skein_aff_key ak = { .client = client, .group = svc->group };
	__u64 now = bpf_ktime_get_ns();
	struct skein_backend *be;

	if (svc->flags & SKEIN_SVC_F_AFFINITY) {
		struct skein_aff_value *av = bpf_map_lookup_elem(&skein_aff, &ak);
		if (av && now - av->last_used_ns < (__u64)svc->affinity_timeout * 1000000000ULL &&
		    av->slot < svc->count) {
			struct skein_be_key ok = { .group = svc->group, .slot = av->slot };
			be = bpf_map_lookup_elem(&skein_be, &ok);
			if (be && be->addr == av->addr && be->port == av->port) {
				av->last_used_ns = now;
				return be;
			}
		}
	}
	be = bpf_map_lookup_elem(&skein_be, &bk);
	if (be && (svc->flags & SKEIN_SVC_F_AFFINITY)) {
		struct skein_aff_value nv = {
			.last_used_ns = now, .addr = be->addr, .port = be->port, .slot = bk.slot,
		};
		bpf_map_update_elem(&skein_aff, &ak, &nv, BPF_ANY);
	}
	return be;
}
