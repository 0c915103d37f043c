package discovery

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Consistent-hash load balancer names and sizes.
const (
	RingHash = "ring_hash"
	Maglev   = "maglev"

	// DefaultMinRingSize and DefaultMaxRingSize bound the ring of a
	// ring_hash picker when its options leave them unset (Envoy's values).
	DefaultMinRingSize = 1024
	DefaultMaxRingSize = 8 << 20
	// MaglevTableSize is the size of a maglev picker's lookup table, a
	// prime (Envoy's default).
	MaglevTableSize = 65537
)

// HashOptions size a ring_hash picker's ring; zero fields take the
// defaults. maglev ignores them.
type HashOptions struct {
	MinRingSize, MaxRingSize int
}

// HashString returns the 64-bit hash of s the hash pickers expect: FNV-1a
// then a finalizing mix, so that keys that differ in one byte land far
// apart on the ring. It does not allocate.
func HashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return mix64(h)
}

// CombineHash folds the hash of another input into acc, as Envoy combines
// the values of several hash policies: acc rotated left by one, xor h.
func CombineHash(acc, h uint64) uint64 { return (acc<<1 | acc>>63) ^ h }

// mix64 is the finalizer of splitmix64: a bijection with full avalanche.
func mix64(z uint64) uint64 {
	z ^= z >> 30
	z *= 0xbf58476d1ce4e5b9
	z ^= z >> 27
	z *= 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// HashPicker is the picker of the ring_hash and maglev load balancers: it
// maps a request's 64-bit hash (PickHash) to a host, the same host for the
// same key while the hosts stay the same. Its table is built once, by
// NewPicker; picks read it without locks or allocations.
//
// A host that is unavailable (ejected), or that the pick must avoid (the
// endpoints a retry or hedge already tried), is skipped: the pick walks on
// from the key's entry (the next points of the ring; the next entries of
// the maglev table) to the first host that is neither. The walk is bounded
// (walkLimit); past it, and when every host is unavailable or avoided, the
// hosts are scanned in order from one the key chooses, so the choice stays
// a function of the key and the set of hosts that are left.
type HashPicker struct {
	lb    string
	hosts []*Host
	// The ring: points sorted by hash, each with its host's index. For
	// maglev, points is nil and owners is the lookup table.
	points []uint64
	owners []int32
}

// walkLimit is how many ring points or table entries a pick tries after
// the key's own before it scans the hosts: with 4 hosts of 5 unavailable,
// a walk is that long about once in 10^9 picks.
func walkLimit(hosts int) int { return 64 + 8*hosts }

func newHashPicker(lb string, hosts []*Host, o HashOptions) *HashPicker {
	p := &HashPicker{lb: lb, hosts: hosts}
	if len(hosts) == 0 {
		return p
	}
	if lb == Maglev && len(hosts) < MaglevTableSize {
		p.owners = maglevTable(hosts, MaglevTableSize)
		return p
	}
	p.lb = RingHash // maglev over more hosts than its table: a ring
	p.points, p.owners = buildRing(hosts, o)
	return p
}

// LoadBalancer returns ring_hash or maglev.
func (p *HashPicker) LoadBalancer() string { return p.lb }

// Hosts returns the picker's hosts, in the order NewPicker was given them;
// the slice is the picker's own: do not modify it.
func (p *HashPicker) Hosts() []*Host { return p.hosts }

// Size returns the number of ring points or maglev table entries.
func (p *HashPicker) Size() int { return len(p.owners) }

// buildRing places every host at the same number of points, a power of
// two, so that the ring has between o.MinRingSize and o.MaxRingSize points
// (less than twice the minimum; at least one a host): host i's points are the hashes of its address with "_0", "_1",
// ... appended.
func buildRing(hosts []*Host, o HashOptions) ([]uint64, []int32) {
	minSize := o.MinRingSize
	if minSize <= 0 {
		minSize = DefaultMinRingSize
	}
	maxSize := o.MaxRingSize
	if maxSize <= 0 {
		maxSize = DefaultMaxRingSize
	}
	maxSize = max(maxSize, minSize)
	n := len(hosts)
	// The count a host is rounded up to a power of two, so that adding or
	// removing a host leaves the others' points as they are (and their
	// keys where they are) unless the count crosses a power of two.
	per := 1
	for per*n < minSize {
		per <<= 1
	}
	per = max(1, min(per, maxSize/n))
	type point struct {
		hash  uint64
		owner int32
	}
	ring := make([]point, 0, per*n)
	var buf []byte
	for i, h := range hosts {
		for j := range per {
			buf = append(append(buf[:0], h.Address...), '_')
			buf = strconv.AppendInt(buf, int64(j), 10)
			ring = append(ring, point{HashString(string(buf)), int32(i)})
		}
	}
	slices.SortFunc(ring, func(a, b point) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return int(a.owner - b.owner)
	})
	points := make([]uint64, len(ring))
	owners := make([]int32, len(ring))
	for i, pt := range ring {
		points[i], owners[i] = pt.hash, pt.owner
	}
	return points, owners
}

// maglevTable fills a lookup table of size m (a prime larger than the
// number of hosts) as the Maglev paper does: each host walks its own
// permutation of the entries (an offset and a skip from two hashes of its
// address) and the hosts take turns claiming the next free entry of theirs.
func maglevTable(hosts []*Host, m int) []int32 {
	n := len(hosts)
	// The hosts take turns in the order of their addresses, so that the
	// table does not depend on the order the endpoints came in.
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(hosts[a].Address, hosts[b].Address) })
	offset := make([]uint64, n)
	skip := make([]uint64, n)
	next := make([]uint64, n)
	for i, h := range hosts {
		offset[i] = HashString(h.Address) % uint64(m)
		skip[i] = HashString(h.Address+"#skip")%uint64(m-1) + 1
	}
	table := make([]int32, m)
	for i := range table {
		table[i] = -1
	}
	filled := 0
	for {
		for _, i := range order {
			c := (offset[i] + next[i]*skip[i]) % uint64(m)
			for table[c] >= 0 {
				next[i]++
				c = (offset[i] + next[i]*skip[i]) % uint64(m)
			}
			table[c] = int32(i)
			next[i]++
			if filled++; filled == m {
				return table
			}
		}
	}
}

// Pick picks for a request without a hash, with a random one, as Envoy
// does: random among the available hosts, weighted by their share of the
// ring or table.
//
// HOT: no locks, no allocations.
func (p *HashPicker) Pick(now time.Time) *Host {
	return p.PickHash(rand.Uint64(), now, nil)
}

// PickHash returns the host of key: its entry's host when that is
// available and none of avoid, else the next entry's that is (see
// HashPicker). When every available host is avoided it returns one of
// them (the key's own first), as an ejected host is a worse guess; when
// every host is unavailable (panic mode), one that is not avoided, the
// key's own first; nil only without hosts.
//
// HOT: no locks, no allocations.
func (p *HashPicker) PickHash(key uint64, now time.Time, avoid []*Host) *Host {
	n := len(p.owners)
	if n == 0 {
		return nil
	}
	var i int
	if p.points != nil {
		i = ringIndex(p.points, key)
	} else {
		i = int(mix64(key) % uint64(n))
	}
	own := p.hosts[p.owners[i]]
	if own.Available(now) && !slices.Contains(avoid, own) {
		return own
	}
	last := own
	for range min(n-1, walkLimit(len(p.hosts))) {
		if i++; i == n {
			i = 0
		}
		h := p.hosts[p.owners[i]]
		if h == last {
			continue // the same host's next point
		}
		last = h
		if h.Available(now) && !slices.Contains(avoid, h) {
			return h
		}
	}
	// Scan the hosts from the one the key chooses.
	hn := len(p.hosts)
	start := int(key % uint64(hn))
	for k := range hn {
		if h := p.hosts[(start+k)%hn]; h.Available(now) && !slices.Contains(avoid, h) {
			return h
		}
	}
	// Every available host is avoided: one of them still beats an
	// ejected host, as for the other pickers.
	if own.Available(now) {
		return own
	}
	for k := range hn {
		if h := p.hosts[(start+k)%hn]; h.Available(now) {
			return h
		}
	}
	// Panic mode: every host is unavailable.
	if !slices.Contains(avoid, own) {
		return own
	}
	for k := range hn {
		if h := p.hosts[(start+k)%hn]; !slices.Contains(avoid, h) {
			return h
		}
	}
	return own
}

// ringIndex returns the first point at or after key, wrapping to 0.
func ringIndex(points []uint64, key uint64) int {
	lo, hi := 0, len(points)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if points[m] < key {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == len(points) {
		return 0
	}
	return lo
}
