package mesh

import (
	"sync/atomic"
	"time"

	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/core"
)

// auditLogEvery is how often the log may say, per caller and rule, that a
// call would have been denied under authorization mode audit; the calls in
// between are counted and the next line says how many were left out.
const auditLogEvery = 10 * time.Second

// auditSlots is the number of (caller, rule) pairs rate-limited apart; two
// pairs that hash to the same slot share its rate.
const auditSlots = 64

// auditLimiter rate-limits the log lines of would-be denials under mode
// audit, so that a flood of calls does not flood the log: at most one line
// per auditLogEvery per slot, a slot per (caller, rule) pair up to
// auditSlots. It takes no lock and allocates nothing; its zero value is
// ready. Safe for concurrent use.
type auditLimiter struct {
	slots [auditSlots]auditSlot
}

type auditSlot struct {
	next       atomic.Int64 // Unix nanoseconds before which the slot logs nothing; 0: log now
	suppressed atomic.Int64 // lines left out since the slot's last line
}

// auditSlotOf returns the slot of caller and rule: FNV-1a of both, apart.
func auditSlotOf(caller, rule string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(caller); i++ {
		h = (h ^ uint64(caller[i])) * prime
	}
	h = (h ^ 0xff) * prime // no byte of a service name: "ab"+"c" is not "a"+"bc"
	for i := 0; i < len(rule); i++ {
		h = (h ^ uint64(rule[i])) * prime
	}
	return h % auditSlots
}

// allow reports whether a line about caller and rule may be logged at now,
// and how many lines of its slot were left out since its last one.
func (l *auditLimiter) allow(now time.Time, caller, rule string) (bool, int64) {
	s := &l.slots[auditSlotOf(caller, rule)]
	t := now.UnixNano()
	next := s.next.Load()
	if t < next || !s.next.CompareAndSwap(next, t+int64(auditLogEvery)) {
		s.suppressed.Add(1)
		return false, 0
	}
	return true, s.suppressed.Swap(0)
}

// auditDenial logs, at Warn and rate-limited, that the call would have
// been denied by d had the authorization not been in mode audit.
func (m *Mesh) auditDenial(caller, method, path string, d identity.Decision, version string) {
	ok, suppressed := m.audit.allow(m.clock.Now(), caller, d.Name)
	if !ok {
		return
	}
	m.log.Warn("authz audit: the call would be denied; mode audit lets it through",
		"service", m.cfg.service, "caller", caller, "method", method, "path", core.PeerText(path),
		"rule", d.Name, "reason", d.Reason, "policy_version", version, "suppressed", suppressed)
}
