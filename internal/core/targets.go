package core

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/resilience"
)

// The split entries of a route may call another service than the route's
// (a service-splitter's split to another service, a service-resolver's
// redirect), and may fail over to other subsets or services while they
// have no available endpoint. A pool of another service holds that
// service's hosts (shared with its own destination: the same outlier
// detection per endpoint), and its attempts prove that service's
// identity, with its connect settings; the calling route's policy
// (retries, budget, breaker, timeouts) applies to them, as Envoy applies
// a route's policy to the cluster it chose.

// needs tracks which of a destination's foreign services were watched.
type needs struct {
	// Needs are the other services the destination's splits and failover
	// targets call, sorted, nil when none: with a control plane that
	// watches endpoints on demand, the first call to the destination
	// starts their watches too.
	Needs   []string
	watched atomic.Bool
}

// NeedsWatched reports whether MarkNeedsWatched was called.
func (n *needs) NeedsWatched() bool { return n.watched.Load() }

// MarkNeedsWatched records that the watches of Needs were started.
func (n *needs) MarkNeedsWatched() { n.watched.Store(true) }

// ClearNeedsWatched forgets MarkNeedsWatched: a watch of Needs stopped,
// and the next call to the destination starts it again. A destination
// outlives the states that reuse it, so its mark must follow the watches.
func (n *needs) ClearNeedsWatched() { n.watched.Store(false) }

// splitEntries compiles the split of route rr of service svc (endpoints
// eps) into rt.Split.
func (c *compiler) splitEntries(d *Destination, svc *policy.ResolvedService, rr *policy.ResolvedRoute, rt *Route, eps []discovery.Endpoint) {
	cum := 0
	for _, ws := range rr.Split {
		cum += ws.Weight
		tgt := policy.Target{Service: ws.Service, Subset: ws.Subset}
		p := c.targetPool(d, svc, rr, rt, tgt, eps)
		p.Label = targetLabel(svc.Name, tgt)
		e := SplitEntry{Subset: ws.Subset, Weight: ws.Weight, Cum: cum, Pool: p}
		for _, ft := range ws.Failover {
			fp := c.targetPool(d, svc, rr, rt, ft, eps)
			from := p.Label
			if from == "" {
				from = "every endpoint"
			}
			fl := targetLabel(svc.Name, ft)
			if fl == "" {
				fl = "every endpoint"
			}
			fp.Label = fl + " (failover from " + from + ")"
			e.Failover = append(e.Failover, fp)
		}
		rt.Split = append(rt.Split, e)
	}
	rt.Total = cum
}

// targetPool returns the pool of target t of a split of service svc: a
// subset (or all) of svc's endpoints eps with the route's settings, or of
// another service's, with that service's outlier detection, load
// balancer, TLS mode and connect timeout.
func (c *compiler) targetPool(d *Destination, svc *policy.ResolvedService, rr *policy.ResolvedRoute, rt *Route, t policy.Target, eps []discovery.Endpoint) *Pool {
	if t.Service == "" || t.Service == svc.Name {
		p := c.pool(svc.Name, t.Subset, discovery.Select(eps, svc.Subsets[t.Subset]), lbOf(&rr.Effective), d.Outlier)
		p.Service, p.MTLS, p.ConnectTimeout = svc.Name, rt.MTLS, rr.Effective.ConnectTimeout
		return p
	}
	if !slices.Contains(d.Needs, t.Service) {
		d.Needs = append(d.Needs, t.Service)
		slices.Sort(d.Needs)
	}
	other := c.pol.Services[t.Service]
	if other == nil {
		// Validated as a service of the document; a service whose block
		// was rejected has none: its share of the calls finds no endpoint.
		return &Pool{Subset: t.Subset, Service: t.Service, MTLS: true, Picker: mustPicker(nil)}
	}
	oeps := c.eps.Endpoints(t.Service)
	var o = c.foreignOutlier(other, oeps)
	p := c.pool(other.Name, t.Subset, discovery.Select(oeps, other.Subsets[t.Subset]), lbOf(&other.Effective), o)
	p.Service = other.Name
	p.MTLS = TLSMode(&other.Effective) == TLSStrict
	p.ConnectTimeout = other.Effective.ConnectTimeout
	return p
}

// foreignOutlier returns the outlier detection of service other (whose
// endpoints are eps), the one its own destination uses, nil when off.
func (c *compiler) foreignOutlier(other *policy.ResolvedService, eps []discovery.Endpoint) *resilience.Outlier {
	od := other.Effective.OutlierDetection
	if od == nil {
		return nil
	}
	o := c.outlier(other.Name, od)
	addrs := make([]string, len(eps))
	for i, ep := range eps {
		addrs[i] = ep.Address
	}
	o.SetPool(addrs)
	return o
}

func mustPicker(hosts []*discovery.Host) discovery.Picker {
	p, _ := discovery.NewPicker("", hosts)
	return p
}

// targetLabel names target t of a split of service: the subset for the
// service's own, service/subset (or service alone, for all its endpoints)
// for another's.
func targetLabel(service string, t policy.Target) string {
	if t.Service == "" || t.Service == service {
		return t.Subset
	}
	if t.Subset == "" {
		return t.Service
	}
	return t.Service + "/" + t.Subset
}

// available reports whether p has a host available at now.
func (p *Pool) available(now time.Time) bool {
	for _, h := range p.Hosts {
		if h.Available(now) {
			return true
		}
	}
	return false
}

// Choose returns the pool a call of e uses at now: e's own while it has
// an available host, else its first failover target that has one, else
// nil.
func (e *SplitEntry) Choose(now time.Time) *Pool {
	if e.Pool.available(now) {
		return e.Pool
	}
	for _, p := range e.Failover {
		if p.available(now) {
			return p
		}
	}
	return nil
}

// noFailover is the cause of a call of e that found no available endpoint
// in e's pool nor any of its failover targets'.
func noFailover(service string, e *SplitEntry) error {
	var b strings.Builder
	for i, p := range e.Failover {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strings.TrimSuffix(p.Label, " (failover from "+labelOr(e.Pool.Label)+")"))
	}
	return fmt.Errorf("no available endpoint in %s of service %q, nor in its failover targets %s", labelOr(e.Pool.Label), service, b.String())
}

func labelOr(l string) string {
	if l == "" {
		return "every endpoint"
	}
	return l
}

// ConnectTimeoutError is the failure of a new connection whose dial or
// TLS handshake outlasted the destination's connect_timeout: a connect
// failure (layer connect, retry_on connect-failure).
type ConnectTimeoutError struct {
	Addr    string
	Timeout time.Duration
	Err     error
}

func (e *ConnectTimeoutError) Error() string {
	return fmt.Sprintf("connect_timeout (%v) passed connecting to %s: %v", e.Timeout, e.Addr, e.Err)
}

// Unwrap returns the dialer's error.
func (e *ConnectTimeoutError) Unwrap() error { return e.Err }

// isConnectTimeout reports whether err is a connect timeout: a
// ConnectTimeoutError, or net/http's TLS handshake timeout (the
// transports of a destination with a connect_timeout bound their
// handshakes by it).
func isConnectTimeout(err error) bool {
	var ct *ConnectTimeoutError
	return errors.As(err, &ct) || strings.Contains(err.Error(), "net/http: TLS handshake timeout")
}

// AvailableHosts returns how many hosts of p are available at now.
func (p *Pool) AvailableHosts(now time.Time) int {
	n := 0
	for _, h := range p.Hosts {
		if h.Available(now) {
			n++
		}
	}
	return n
}

// TargetOf returns the target p is of, in a split of service: its
// Service is "" for service's own hosts.
func (p *Pool) TargetOf(service string) policy.Target {
	if p.Service == service {
		return policy.Target{Subset: p.Subset}
	}
	return policy.Target{Service: p.Service, Subset: p.Subset}
}

// serviceOr returns p's service, or dest when p names none (a pool built
// by hand).
func (p *Pool) serviceOr(dest string) string {
	if p.Service == "" {
		return dest
	}
	return p.Service
}
