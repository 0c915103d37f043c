package mesh

import (
	"context"
	"sync"
	"time"
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
// each instance Register put in the catalog, after Register and after
// every policy it applies, from a goroutine of its own: the latest status
// wins, and a slow or failing report never delays a call or a policy
// update. Close stops the reports before it closes the control plane.
type StatusReporter interface {
	ReportStatus(ctx context.Context, st PolicyStatus) error
}

// statusReports runs the reports of a mesh whose control plane is a
// StatusReporter.
type statusReports struct {
	to     StatusReporter
	kick   chan struct{}   // buffered 1: a report is due
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
	r := &statusReports{to: to, kick: make(chan struct{}, 1)}
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
		for {
			select {
			case <-r.ctx.Done():
				return
			case <-r.kick:
				m.reportStatus(r)
			}
		}
	})
}

// statusChanged says a report is due (a policy applied, an instance
// registered). It never blocks.
func (m *Mesh) statusChanged() {
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
		m.statusChanged()
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
