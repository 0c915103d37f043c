package telemetry

import (
	"sync"
	"sync/atomic"
)

// cowCache is a bounded, read-mostly map from K to V for the hot recording
// paths, copy-on-write in the manner of sync.Map:
//
//   - read is an immutable map behind an atomic pointer. A hit there takes
//     no lock and allocates nothing: that is the steady state.
//   - A miss takes mu, builds the value and adds it to dirty, a private map
//     holding every entry (read's and the newer ones). Once as many locked
//     lookups have happened as dirty holds entries, dirty is published as
//     the new read map. Each copy of n entries is so paid for by n lookups,
//     and filling the cache costs O(n), not the O(n²) of copying the whole
//     map on every miss.
//   - At max entries the map is published and frozen: a miss then builds the
//     value for that call only, without the lock, and keeps nothing. Hostile
//     cardinality costs CPU, never unbounded memory or lock contention.
//
// The zero value is not ready: set max. Values must be safe to share; the
// cache hands the same V to every caller.
type cowCache[K comparable, V any] struct {
	read atomic.Pointer[map[K]V] // immutable once published
	full atomic.Bool             // read holds max entries and no more are kept

	mu     sync.Mutex
	dirty  map[K]V // nil, or a superset of *read; guarded by mu
	misses int     // locked lookups since the last publication; guarded by mu
	max    int
}

// get returns the cached value of k, or build(k) on a miss. build must not
// call back into c.
func (c *cowCache[K, V]) get(k K, build func(K) V) V {
	if r := c.read.Load(); r != nil {
		if v, ok := (*r)[k]; ok {
			return v
		}
	}
	if c.full.Load() {
		return build(k)
	}
	return c.getLocked(k, build)
}

func (c *cowCache[K, V]) getLocked(k K, build func(K) V) V {
	c.mu.Lock()
	defer c.mu.Unlock()
	var read map[K]V
	if r := c.read.Load(); r != nil {
		read = *r
	}
	if v, ok := read[k]; ok { // published meanwhile
		return v
	}
	if v, ok := c.dirty[k]; ok {
		c.missed()
		return v
	}
	v := build(k)
	if c.full.Load() {
		return v
	}
	if c.dirty == nil {
		c.dirty = make(map[K]V, 2*len(read)+1)
		for rk, rv := range read {
			c.dirty[rk] = rv
		}
	}
	c.dirty[k] = v
	if len(c.dirty) >= c.max {
		c.publish()
		c.full.Store(true)
		return v
	}
	c.missed()
	return v
}

// missed counts a locked lookup and publishes dirty when the lookups have
// paid for its copy. mu must be held.
func (c *cowCache[K, V]) missed() {
	c.misses++
	if c.misses >= len(c.dirty) {
		c.publish()
	}
}

// publish makes dirty the read map. mu must be held.
func (c *cowCache[K, V]) publish() {
	m := c.dirty
	c.read.Store(&m)
	c.dirty = nil
	c.misses = 0
}

// len reports how many entries the cache keeps.
func (c *cowCache[K, V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dirty != nil {
		return len(c.dirty)
	}
	if r := c.read.Load(); r != nil {
		return len(*r)
	}
	return 0
}
