package mesh

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/inmesh/inmesh/internal/clock"
)

// PolicyStatus is what one registered instance of this workload applied:
// the policy version in force, and whether it serves it from the
// last-known-good cache because the control plane does not answer. A
// control plane that keeps a fleet's status (StatusReporter) hears it.
type PolicyStatus struct {
	Service  string    `json:"service"`
	Instance string    `json:"instance"` // the ID Register gave the catalog
	Version  string    `json:"version"`
	Hash     string    `json:"hash"`
	Source   string    `json:"source"`
	Cached   bool      `json:"cached"` // served from the last-known-good cache
	Applied  time.Time `json:"applied"`
}

// StatusReporter is implemented by a ControlPlane that keeps what each
// registered instance of a fleet applied, so that an operator sees which
// instances run which policy version (consul.ControlPlane keeps a KV key
// per instance; `inmesh status --consul` reads them). The mesh reports
// each instance Register put in the catalog, from a goroutine of its own:
// at once after Register, and after the policies it applies at a random
// moment within statusSpread, so that a fleet that applies a write at
// once does not write its statuses at once, and a burst of writes makes
// one report. The latest status wins, and a slow or failing report never
// delays a call or a policy update. Close stops the reports before it
// closes the control plane.
type StatusReporter interface {
	ReportStatus(ctx context.Context, st PolicyStatus) error
}

// statusReports runs the reports of a mesh whose control plane is a
// StatusReporter.
type statusReports struct {
	to     StatusReporter
	kick   chan struct{}   // buffered 1: a report is due now
	later  chan struct{}   // buffered 1: a report is due within statusSpread
	ctx    context.Context // ends when the reports stop, so Close never waits on a hung report
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	instances []string // registered instance IDs
	running   bool     // the goroutine started
}

// startStatusReports readies m's reporter when its control plane keeps a
// fleet's status; its goroutine starts at the first registered instance.
func (m *Mesh) startStatusReports() {
	to, ok := m.plane.(StatusReporter)
	if !ok {
		return
	}
	r := &statusReports{to: to, kick: make(chan struct{}, 1), later: make(chan struct{}, 1)}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	m.status = r
}

// runStatusReports starts the goroutine of r's reports, at the first
// registered instance (a mesh that registers nothing reports nothing, and
// keeps no goroutine for it); r.mu is held.
func (m *Mesh) runStatusReportsLocked(r *statusReports) {
	if r.running || r.ctx.Err() != nil {
		return
	}
	r.running = true
	r.wg.Go(func() {
		var due clock.Timer // a report within statusSpread; nil: none
		var dueC <-chan time.Time
		stop := func() {
			if due != nil {
				due.Stop()
				due, dueC = nil, nil
			}
		}
		defer stop()
		for {
			select {
			case <-r.ctx.Done():
				return
			case <-r.kick:
				stop() // this report says the latest
				m.reportStatus(r)
			case <-r.later:
				if due == nil {
					due = m.clock.NewTimer(time.Duration(m.statusDraw() * float64(statusSpread)))
					dueC = due.C()
				}
			case <-dueC:
				due, dueC = nil, nil
				m.reportStatus(r)
			}
		}
	})
}

// statusSpread bounds the delay of the report of a policy applied: the
// instances of a fleet, which apply a write within milliseconds of each
// other, spread their reports over it instead of writing to the control
// plane all at once (500 instances, 500 writes to Consul's servers), and
// the writes of a burst make one report.
const statusSpread = time.Second

// statusDraw returns a uniform draw in [0, 1) for the delay of a report.
func (m *Mesh) statusDraw() float64 {
	if m.env.Rand != nil {
		return m.env.Rand()
	}
	return rand.Float64()
}

// statusChanged says a report is due within statusSpread (a policy
// applied). It never blocks.
func (m *Mesh) statusChanged() {
	if r := m.status; r != nil {
		select {
		case r.later <- struct{}{}:
		default:
		}
	}
}

// statusNow says a report is due now (an instance registered). It never
// blocks.
func (m *Mesh) statusNow() {
	if r := m.status; r != nil {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// registered adds id to the instances m reports.
func (m *Mesh) registered(id string) {
	if r := m.status; r != nil {
		r.mu.Lock()
		r.instances = append(r.instances, id)
		m.runStatusReportsLocked(r)
		r.mu.Unlock()
		m.statusNow()
	}
}

// reportStatus reports the state in force for every registered instance.
func (m *Mesh) reportStatus(r *statusReports) {
	r.mu.Lock()
	ids := append([]string(nil), r.instances...)
	r.mu.Unlock()
	st := m.state.Load()
	if len(ids) == 0 || st == nil {
		return
	}
	for _, id := range ids {
		ps := PolicyStatus{Service: m.cfg.service, Instance: id, Version: st.policy.Version, Hash: st.policy.Hash,
			Source: st.policy.Source, Cached: m.servingFromCache(), Applied: st.policy.Loaded}
		ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
		err := r.to.ReportStatus(ctx, ps)
		cancel()
		if err != nil && r.ctx.Err() == nil {
			m.log.Warn("reporting the policy status failed", "instance", id, "version", ps.Version, "err", err)
		}
	}
}

// stopStatusReports stops the reporter and waits for it.
func (m *Mesh) stopStatusReports() {
	if r := m.status; r != nil {
		r.mu.Lock()
		r.cancel() // under r.mu: no goroutine starts after it
		r.mu.Unlock()
		r.wg.Wait()
	}
}
