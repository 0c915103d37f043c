package core

import (
	"slices"
	"strconv"
	"time"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/resilience"
	"github.com/inmesh/inmesh/telemetry"
)

// Destination is one service of the policy, compiled. It is immutable once
// compiled, except for the live parts it points to (breakers, budgets,
// host health), which are safe for concurrent use. It does not know the
// policy version: a compilation reuses the destinations whose inputs did
// not change (Compile), across versions, and the adapter gives each call
// the version of the state it read (Call.PolicyVersion).
type Destination struct {
	Name      string
	Routes    []*Route
	HasRoutes bool
	Outlier   *resilience.Outlier // nil when outlier detection is off for the service
	Breaker   *resilience.Breaker // the service-level breaker, nil when off
	// Limiter is the concurrency limit toward the service, taken per
	// attempt; nil when off. Shed counts its refusals.
	Limiter *resilience.Limiter
	Shed    *telemetry.Counter
	// needs lists the other services the splits call (Needs).
	needs
	// ConnectTimeout is the service-level connect_timeout (0: none), which
	// gRPC's connections, shared by every route, apply to their TLS
	// handshake.
	ConnectTimeout time.Duration
	// TLS is the service-level TLS mode, strict or disable. gRPC uses it
	// for its connections, which every route of the service shares (a
	// route's own tls override applies to HTTP only).
	TLS string
}

// Route is one route of a destination with its effective settings resolved
// into ready-to-use parts. Stateful parts (breaker, budget, host health) are
// shared with earlier compilations whose configuration is the same, so a
// policy reload does not reset them.
type Route struct {
	Dest    *Destination
	Name    string
	Match   Matcher
	Split   []SplitEntry // empty: all endpoints (pool All)
	Total   int          // sum of split weights
	All     *Pool
	Eff     *policy.Effective
	RetryOn resilience.RetryOn
	Backoff resilience.BackoffConfig
	Breaker *resilience.Breaker // nil when off
	Budget  *resilience.Budget  // nil when attempts == 1
	Counter *telemetry.Counter  // attempts toward this route
	// IdempotentOnly is true unless non_idempotent is set.
	IdempotentOnly bool
	MTLS           bool // tls strict toward this destination
	// TimeoutMs is the route's timeout in milliseconds, formatted once:
	// the time left that a call's first attempt propagates, most often.
	TimeoutMs Millis
	// Fault is the route's fault injection, nil when its policy injects
	// nothing.
	Fault *Fault
	// Hedge is the route's hedging, nil when off.
	Hedge *Hedge
	// Hash computes a call's hash for a ring_hash or maglev load balancer;
	// nil when the route has no hash policy.
	Hash *Hasher
	// Rewrite and Headers are the route's actions on the request it sends
	// (prefix_rewrite, request_headers), nil when it has none.
	Rewrite *Rewrite
	Headers *HeaderActions
}

// Hedge is a route's hedging, compiled: when the attempt in flight has not
// answered after the delay, up to Max more attempts are sent, each to
// another endpoint, the first answer wins and the others are canceled
// (Call.Run).
type Hedge struct {
	// Delay is the fixed wait before a hedge; 0 when the delay is the
	// Quantile of the route's recent latency (Latency).
	Delay    time.Duration
	Quantile float64                    // 0 < Quantile < 1, with Latency
	Latency  *resilience.LatencyTracker // the route's recent latency; nil with a fixed Delay
	Max      int                        // extra attempts in flight, 1..5
	// NonIdempotent hedges requests that are not idempotent too (their
	// body must still be replayable).
	NonIdempotent bool
}

// delay returns the wait before a hedge of a call at now, and false when
// no hedge is to be sent: the quantile has too few samples yet.
func (h *Hedge) delay(now time.Time) (time.Duration, bool) {
	if h.Delay > 0 {
		return h.Delay, true
	}
	return h.Latency.Quantile(h.Quantile, now)
}

// Millis is a count of milliseconds with its decimal text.
type Millis struct {
	N    int64
	Text string
}

// Format returns the decimal text of ms: m's own when ms is m's, without
// an allocation.
func (m Millis) Format(ms int64) string {
	if ms == m.N && m.Text != "" {
		return m.Text
	}
	return strconv.FormatInt(ms, 10)
}

// SplitEntry is one weighted subset of a route's split; Cum is the running
// sum of weights up to and including this entry.
type SplitEntry struct {
	Subset string
	Weight int
	Cum    int
	Pool   *Pool
	// Failover are the pools the entry's calls use, in order, while Pool
	// has no available host; nil without failover.
	Failover []*Pool
}

// Pool is the set of hosts one subset selects, with the route's picker.
type Pool struct {
	Subset string
	Hosts  []*discovery.Host
	Picker discovery.Picker
	// Hash is Picker when it is a consistent-hash one (ring_hash or
	// maglev), for picks by the request's hash; nil otherwise.
	Hash *discovery.HashPicker
	// Why is why the pool's service has no endpoints at all, when the
	// control plane said (discovery.Snapshot.Why); "" otherwise.
	Why string
	// Service is the service the hosts belong to, whose identity they
	// prove: the destination's, or another's for a split to it.
	Service string
	// Label names the pool in errors and telemetry (Call.SubsetName): the
	// subset, "service/subset" (or "service") of another service, with "
	// (failover from <entry>)" for a failover target.
	Label string
	// MTLS says the attempts speak mTLS (the route's tls for the
	// destination's own hosts, the service's for another's).
	MTLS bool
	// ConnectTimeout bounds the dial and TLS handshake of a new
	// connection to a host; 0: the transport's default.
	ConnectTimeout time.Duration
}

// PickSplit chooses the split entry for a call. r is uniform in [0, Total).
func (rt *Route) PickSplit(r int) *SplitEntry {
	for i := range rt.Split {
		if r < rt.Split[i].Cum {
			return &rt.Split[i]
		}
	}
	return &rt.Split[len(rt.Split)-1]
}

// MaxAttempts is the number of attempts the route allows a call: its
// attempts, or 1 when the call cannot be sent again (its body cannot be
// replayed) or may not be (it is not idempotent and the route does not say
// non_idempotent).
func (rt *Route) MaxAttempts(req *Request) int {
	if rt.Eff.Attempts > 1 && (!req.Replayable || (rt.IdempotentOnly && !req.Idempotent)) {
		return 1
	}
	return rt.Eff.Attempts
}

// Lookup finds the route of d that matches req, or nil.
func (d *Destination) Lookup(req *Request) *Route {
	for _, rt := range d.Routes {
		if rt.Match.Match(req) {
			return rt
		}
	}
	return nil
}

// Pick returns a host of p for an attempt at now, another one than prev
// when the picker offers one.
func (p *Pool) Pick(prev *discovery.Host, now time.Time) *discovery.Host {
	h := p.Picker.Pick(now)
	if h == prev && prev != nil && len(p.Hosts) > 1 {
		h = p.Picker.Pick(now)
	}
	return h
}

// PickAvoiding returns a host of p for a hedge at now that is none of
// avoid (the endpoints of the attempts in flight), or nil when p has no
// other host. It asks the picker first, so the load balancer decides among
// the others, then takes the first other available host.
func (p *Pool) PickAvoiding(avoid []*discovery.Host, now time.Time) *discovery.Host {
	for range len(p.Hosts) {
		h := p.Picker.Pick(now)
		if h == nil {
			return nil
		}
		if !slices.Contains(avoid, h) {
			return h
		}
	}
	for _, h := range p.Hosts {
		if !slices.Contains(avoid, h) && h.Available(now) {
			return h
		}
	}
	return nil
}

// PickHash returns the host of p for the request's hash key, another one
// than prev (the last attempt's, nil at first) when p has another
// available: a retry goes to the next host on the ring. Without a hash
// picker it is Pick.
//
// HOT: no allocations.
func (p *Pool) PickHash(key uint64, prev *discovery.Host, now time.Time) *discovery.Host {
	if p.Hash == nil {
		return p.Pick(prev, now)
	}
	if prev == nil {
		return p.Hash.PickHash(key, now, nil)
	}
	avoid := [1]*discovery.Host{prev}
	return p.Hash.PickHash(key, now, avoid[:])
}

// PickAvoidingHash is PickAvoiding for a request with a hash key: the
// next host for the key that is none of avoid, or nil when p has none.
func (p *Pool) PickAvoidingHash(key uint64, avoid []*discovery.Host, now time.Time) *discovery.Host {
	if p.Hash == nil {
		return p.PickAvoiding(avoid, now)
	}
	h := p.Hash.PickHash(key, now, avoid)
	if h == nil || slices.Contains(avoid, h) {
		return nil
	}
	return h
}

// Health returns the outlier handle of h, or nil.
func Health(h *discovery.Host) *resilience.HostHealth {
	hh, _ := h.Health.(*resilience.HostHealth)
	return hh
}

// The TLS modes of the policy.
const (
	TLSStrict  = "strict"
	TLSDisable = "disable"
)

// TLSMode is the client-side TLS mode toward a destination: the policy's,
// or strict, since every mesh has an identity.
func TLSMode(eff *policy.Effective) string {
	if eff.TLS != "" {
		return eff.TLS
	}
	return TLSStrict
}
