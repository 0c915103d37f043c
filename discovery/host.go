package discovery

import (
	"sync/atomic"
	"time"
)

// Availability reports whether a host may be picked now; outlier detection
// implements it. Implementations must be safe for concurrent use and cheap:
// pickers call Available on the request path.
type Availability interface {
	Available(now time.Time) bool
}

// cacheLine is the assumed size of a CPU cache line (64 bytes on amd64 and
// most arm64 cores).
const cacheLine = 64

// Host is one endpoint with live state, shared by the snapshots and pickers
// that contain it. Create hosts with NewHost and keep them across snapshots
// for the same address, so that in-flight counts carry over. Host's methods
// are safe for concurrent use; Endpoint and Health must not be modified once
// the host is shared.
type Host struct {
	Endpoint
	// Health reports outlier ejection; nil means always available.
	Health Availability

	// inflight is written by every request on the host while pickers read
	// the fields above from other cores: the padding keeps it on a cache
	// line of its own (heap objects are not cache-line aligned, so padding
	// on both sides is needed).
	_        [cacheLine - 8]byte
	inflight atomic.Int64
	_        [cacheLine - 8]byte
}

// NewHost returns a host for ep; a nil health means always available.
func NewHost(ep Endpoint, health Availability) *Host {
	return &Host{Endpoint: ep, Health: health}
}

// Available reports whether h may be picked at now: its Health says so, or it
// has no Health. Host therefore satisfies Availability.
func (h *Host) Available(now time.Time) bool {
	return h.Health == nil || h.Health.Available(now)
}

// Begin records that a request started on h. Call End exactly once when it
// finishes.
//
// HOT: one atomic add.
func (h *Host) Begin() { h.inflight.Add(1) }

// End records that a request started with Begin finished.
//
// HOT: one atomic add.
func (h *Host) End() { h.inflight.Add(-1) }

// InFlight returns the number of requests begun and not yet ended on h.
func (h *Host) InFlight() int64 { return h.inflight.Load() }
