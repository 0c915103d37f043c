package discovery

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// Load balancer names, as written in the policy's load_balancer field.
const (
	RoundRobin   = "round_robin"
	LeastRequest = "least_request"
	Random       = "random"
)

// ErrUnknownLoadBalancer is returned, wrapped, by NewPicker for an unknown
// load balancer name.
var ErrUnknownLoadBalancer = errors.New("discovery: unknown load_balancer")

// Picker chooses a host; it never blocks and is safe for concurrent use.
type Picker interface {
	// Pick returns a host that is available at now, or, if every host is
	// unavailable, any host (panic mode, like Envoy); nil only when there
	// are none.
	//
	// HOT: no locks, no allocations.
	Pick(now time.Time) *Host
}

// NewPicker returns a picker over hosts with the load balancer lb:
//
//   - "round_robin" (or ""): hosts in turn from an atomic counter (starting
//     at a random host); an unavailable host is skipped for the next
//     available one, scanning forward at most len(hosts).
//   - "least_request": the power of two random choices: two distinct random
//     available hosts, the one with fewer requests in flight wins (ties are
//     broken at random).
//   - "random": uniform among the available hosts.
//   - "ring_hash" and "maglev": a *HashPicker, consistent hashing of the
//     request's hash (PickHash) over a ring of between 1024 and 8M points
//     or a Maglev table of 65537 entries, built here once; Pick, for a
//     request without a hash, picks with a random one (see HashPicker).
//     NewPickerOptions sizes the ring.
//
// Any other name is an error wrapping ErrUnknownLoadBalancer. NewPicker
// copies hosts (nil entries are dropped); the hosts themselves are shared.
// With no hosts, Pick returns nil.
func NewPicker(lb string, hosts []*Host) (Picker, error) {
	return NewPickerOptions(lb, hosts, HashOptions{})
}

// NewPickerOptions is NewPicker with the ring's size for ring_hash.
func NewPickerOptions(lb string, hosts []*Host, o HashOptions) (Picker, error) {
	hs := make([]*Host, 0, len(hosts))
	for _, h := range hosts {
		if h != nil {
			hs = append(hs, h)
		}
	}
	switch lb {
	case "", RoundRobin:
		p := &roundRobin{hosts: hs}
		if len(hs) > 0 {
			p.next.Store(rand.Uint64N(uint64(len(hs))))
		}
		return p, nil
	case LeastRequest:
		return &leastRequest{hosts: hs}, nil
	case Random:
		return &random{hosts: hs}, nil
	case RingHash, Maglev:
		return newHashPicker(lb, hs, o), nil
	}
	return nil, fmt.Errorf("%w %q (want %s, %s, %s, %s or %s)", ErrUnknownLoadBalancer, lb, RoundRobin, LeastRequest, Random, RingHash, Maglev)
}

// fastTries is how many uniform draws random and least_request try before
// they count the available hosts and draw among them exactly. With a third
// of the hosts ejected, 3 tries leave about 4% (random) and 16%
// (least_request) of picks to the two-scan slow path.
const fastTries = 3

// roundRobin hands out hosts in turn.
type roundRobin struct {
	hosts []*Host
	next  atomic.Uint64
}

func (p *roundRobin) Pick(now time.Time) *Host {
	n := uint64(len(p.hosts))
	if n == 0 {
		return nil
	}
	start := (p.next.Add(1) - 1) % n
	for i, j := uint64(0), start; i < n; i++ {
		if h := p.hosts[j]; h.Available(now) {
			return h
		}
		if j++; j == n {
			j = 0
		}
	}
	return p.hosts[start] // panic mode
}

// random picks uniformly among the available hosts.
type random struct {
	hosts []*Host
}

func (p *random) Pick(now time.Time) *Host {
	n := len(p.hosts)
	if n == 0 {
		return nil
	}
	// Fast path: uniform draws, rejected while they land on an unavailable
	// host. Every accepted draw, and the exact draw among the available
	// hosts that follows the last rejection, is uniform among the available
	// hosts, so the mixture is too.
	for range fastTries {
		if h := p.hosts[rand.IntN(n)]; h.Available(now) {
			return h
		}
	}
	m := countAvailable(p.hosts, now)
	if m == 0 {
		return p.hosts[rand.IntN(n)] // panic mode
	}
	if h, _ := nthAvailable(p.hosts, now, rand.IntN(m), -1); h != nil {
		return h
	}
	return p.hosts[rand.IntN(n)] // hosts were ejected meanwhile
}

// leastRequest picks the less loaded of two random available hosts.
type leastRequest struct {
	hosts []*Host
}

func (p *leastRequest) Pick(now time.Time) *Host {
	n := len(p.hosts)
	switch n {
	case 0:
		return nil
	case 1:
		return p.hosts[0]
	}
	// Fast path: pairs of distinct uniform draws, rejected while either is
	// unavailable; the exact draw among the available pairs after the last
	// rejection keeps every available pair equally likely, as in random.
	var a int
	var ha, hb *Host
	for range fastTries {
		var b int
		a, b = twoDistinct(n)
		ha, hb = p.hosts[a], p.hosts[b]
		if ha.Available(now) && hb.Available(now) {
			return lessLoaded(ha, hb)
		}
	}
	m := countAvailable(p.hosts, now)
	switch m {
	case 0:
		return lessLoaded(ha, hb) // panic mode: still prefer the less loaded
	case 1:
		if h, _ := nthAvailable(p.hosts, now, 0, -1); h != nil {
			return h
		}
		return lessLoaded(ha, hb)
	}
	ra, rb := twoDistinct(m)
	ha, hb = nthAvailable(p.hosts, now, ra, rb)
	switch {
	case ha != nil && hb != nil:
		return lessLoaded(ha, hb)
	case ha != nil:
		return ha
	case hb != nil:
		return hb
	}
	return p.hosts[a] // hosts were ejected meanwhile
}

// twoDistinct returns two distinct uniform indexes in [0, n), n >= 2.
func twoDistinct(n int) (int, int) {
	a := rand.IntN(n)
	b := rand.IntN(n - 1)
	if b >= a {
		b++
	}
	return a, b
}

// lessLoaded returns the host with fewer requests in flight, either at random
// on a tie.
func lessLoaded(a, b *Host) *Host {
	fa, fb := a.InFlight(), b.InFlight()
	switch {
	case fa < fb:
		return a
	case fb < fa:
		return b
	case rand.Uint32()&1 == 0:
		return a
	}
	return b
}

func countAvailable(hosts []*Host, now time.Time) int {
	m := 0
	for _, h := range hosts {
		if h.Available(now) {
			m++
		}
	}
	return m
}

// nthAvailable returns the i-th and j-th available hosts (counting from 0)
// in one scan; j < 0 asks for the i-th only. A result is nil when hosts
// became unavailable since they were counted.
func nthAvailable(hosts []*Host, now time.Time, i, j int) (hi, hj *Host) {
	k := 0
	for _, h := range hosts {
		if !h.Available(now) {
			continue
		}
		switch k {
		case i:
			hi = h
		case j:
			hj = h
		}
		k++
		if hi != nil && (j < 0 || hj != nil) {
			break
		}
	}
	return hi, hj
}
