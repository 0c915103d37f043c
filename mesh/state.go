package mesh

import (
	"net/http"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/resilience"
	"github.com/inmesh/inmesh/telemetry"
)

// state is one immutable view of everything the request path reads: the
// policy snapshot, the endpoints, and the destinations compiled from both.
// It is built off the request path, published through an atomic.Pointer,
// and never modified afterwards.
type state struct {
	policy    *policy.Snapshot
	endpoints *discovery.Snapshot
	services  map[string]*destination
	self      selfAuthz // how this workload authorizes its callers
	// selfPlaintext is set when this workload's own service says tls:
	// disable: its callers dial it in plaintext, so its gRPC server accepts
	// plaintext connections besides mTLS (see serverCreds).
	selfPlaintext bool
	// egressDeny is set when the policy says egress: deny: a host that is
	// no service of the policy fails at layer egress instead of passing
	// through (see state.outside).
	egressDeny bool

	// seq numbers the states of a mesh in the order they were published,
	// from 1. The gRPC balancer compares the state its picker was built
	// from with a call's (see pickSlot.seq).
	seq uint64

	// replaced is closed when a newer state is published: a watcher that
	// read this state waits on it and then loads the new one, so no update
	// is missed and the request path never takes a lock (see Mesh.watch).
	replaced chan struct{}
}

// destination is one service of the policy, compiled.
type destination struct {
	name      string
	version   string // policy version, for errors
	routes    []*route
	hasRoutes bool
	outlier   *resilience.Outlier // nil when outlier detection is off for the service
	breaker   *resilience.Breaker // the service-level breaker, nil when off
	// tls is the service-level TLS mode, strict or disable. gRPC uses it for
	// its connections, which every route of the service shares (a route's
	// own tls override applies to HTTP only).
	tls string
}

// route is one route of a destination with its effective settings resolved
// into ready-to-use parts. Stateful parts (breaker, budget, host health) are
// shared with earlier states whose configuration is the same, so a policy
// reload does not reset them.
type route struct {
	dest    *destination
	name    string
	match   matcher
	split   []splitEntry // empty: all endpoints (pool all)
	total   int          // sum of split weights
	all     *pool
	eff     *policy.Effective
	retryOn resilience.RetryOn
	backoff resilience.BackoffConfig
	breaker *resilience.Breaker // nil when off
	budget  *resilience.Budget  // nil when attempts == 1
	counter *telemetry.Counter  // attempts toward this route
	// idempotentOnly is true unless non_idempotent is set.
	idempotentOnly bool
	mtls           bool // tls strict toward this destination
}

// splitEntry is one weighted subset of a route's split; cum is the running
// sum of weights up to and including this entry.
type splitEntry struct {
	subset string
	weight int
	cum    int
	pool   *pool
}

// pool is the set of hosts one subset selects, with the route's picker.
type pool struct {
	subset string
	hosts  []*discovery.Host
	picker discovery.Picker
}

// pickSplit chooses the split entry for a call. r is uniform in [0, total).
func (rt *route) pickSplit(r int) *splitEntry {
	for i := range rt.split {
		if r < rt.split[i].cum {
			return &rt.split[i]
		}
	}
	return &rt.split[len(rt.split)-1]
}

// lookup finds the route of dest that matches req, or nil.
func (d *destination) lookup(req *http.Request) *route {
	for _, rt := range d.routes {
		if rt.match.matchHTTP(req) {
			return rt
		}
	}
	return nil
}

// health returns the outlier handle of h, or nil.
func health(h *discovery.Host) *resilience.HostHealth {
	hh, _ := h.Health.(*resilience.HostHealth)
	return hh
}

// stateless durations used when an effective value is absent.
const drainLimit = 4 << 10 // bytes read from a discarded response to reuse its connection
