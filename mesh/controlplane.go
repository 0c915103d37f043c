package mesh

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/policy"
)

// ControlPlane is where a mesh learns what to do: the policy, the
// endpoints of the destinations it calls, this workload's identity, how
// its callers are authorized, and where this instance is registered.
// WithPolicyFile and WithPolicy are control planes that hold a policy and
// nothing else; package github.com/inmesh/inmesh/consul makes Consul one;
// another control plane implements this interface.
//
// New calls Policy, Endpoints and Authorizer once, at its start, then
// Identity once a first policy is in force (and only without WithIdentity);
// Register when the application calls Mesh.Register; Close from Mesh.Close.
// A ControlPlane serves one Mesh: New takes it over, and the mesh's Close
// closes it (also when New fails). Its methods may be called from several
// goroutines.
type ControlPlane interface {
	// Policy returns the source of the policy. The mesh watches it from
	// New until Close; New waits for a first valid document (or, with
	// WithCacheDir, starts from the cache when none comes). An error fails
	// New.
	Policy(w Workload) (policy.Source, error)
	// Endpoints returns the source of the endpoints of the destinations the
	// mesh calls, or nil when the policy's static endpoints are all there
	// is. A destination that lists static endpoints in the policy keeps
	// them.
	Endpoints(w Workload) (EndpointSource, error)
	// Identity returns this workload's identity source once it holds an
	// identity, blocking until then or ctx ends. nil and no error means the
	// control plane issues none: the mesh uses the shared dev CA.
	Identity(ctx context.Context, w Workload) (identity.Source, error)
	// Authorizer returns how this workload authorizes its callers, or nil
	// when the policy's authorization blocks decide. It returns at once;
	// New waits for the Authorization's Ready within its ctx, unless it
	// started from the cache.
	Authorizer(w Workload) (*Authorization, error)
	// Register puts inst, an instance of w, in the control plane's catalog,
	// until Close takes it out. A control plane without a catalog returns
	// an error matching ErrNoCatalog.
	Register(ctx context.Context, w Workload, inst Instance) error
	// Close stops everything the control plane started for the mesh and
	// takes out what it registered.
	Close() error
}

// Workload is what a mesh tells its control plane about itself.
type Workload struct {
	// Service is this workload's service name (WithService).
	Service string
	// Logger is the mesh's logger; never nil.
	Logger *slog.Logger
	// PolicyStaleness receives how stale each answer of the policy source
	// may be (with Consul, X-Consul-LastContact); the mesh exports it as
	// inmesh.policy.staleness. Never nil.
	PolicyStaleness func(time.Duration)
}

// EndpointSource gives the endpoints of the destinations a mesh calls. A
// destination is watched from its first call on (Watch), so a process
// follows only the services it calls. Implementations are safe for
// concurrent use.
type EndpointSource interface {
	// Watch starts watching service, if it is not watched yet, and returns
	// once its first endpoints are known or ctx ends; the watch goes on
	// until the control plane is closed.
	Watch(ctx context.Context, service string)
	// Current returns the endpoints known now, of every watched service.
	// The snapshot must not be modified.
	Current() *discovery.Snapshot
	// Changed returns a channel closed at the next change of Current.
	Changed() <-chan struct{}
}

// WatchStopper is implemented by an EndpointSource that can stop watching
// a destination the mesh has not called for a while (idleSweeps sweeps of
// idleSweep in a row without a call: 2 to 3 minutes), so that a process
// holds long polls only for what it calls.
type WatchStopper interface {
	// StopWatching stops watching service (and whatever the control plane
	// follows for it), keeping its last endpoints in Current. The next
	// Watch of service starts again; a call that finds endpoints does not
	// wait for it.
	StopWatching(service string)
}

// idleSweep is the period of the sweep of idle destinations, and
// idleSweeps the sweeps in a row without a call after which a destination
// stops being watched.
const (
	idleSweep  = time.Minute
	idleSweeps = 2
)

// ServiceFinder is implemented by an EndpointSource whose control plane
// knows services the policy document does not name (with Consul, every
// service with a Connect-capable instance or a config entry), so that
// their calls stay in the mesh without a policy block each. A call to a
// host that names no service of the policy in force (and Explain of one)
// asks FindService before the call leaves the mesh.
type ServiceFinder interface {
	// FindService reports whether service is a service of the mesh; when
	// it is, a policy that holds service is in force before it returns
	// (or ctx ends, or a bound of its own, short, passes). Every call to an
	// outside host asks it: a name it answered no for lately must cost no
	// more than a lock-free lookup, without allocating.
	FindService(ctx context.Context, service string) bool
}

// Authorization is how a control plane authorizes this workload's callers,
// in place of the policy's authorization blocks.
type Authorization struct {
	// Authorize decides whether caller (a service name, "" when the peer
	// presented no certificate) may call method on path; path is as the
	// client spelled it, percent-escapes kept, and header gives every value
	// of a request header (valid during the call only). It is called on
	// every request, from many goroutines, and must not block; it must deny
	// until it has the control plane's data.
	Authorize func(caller, method, path string, header RequestHeader) identity.Decision
	// Ready is closed once Authorize decides on the control plane's data;
	// nil means at once.
	Ready <-chan struct{}
}

// ErrNoCatalog is matched by errors.Is when Register is called on a mesh
// whose control plane has no catalog (WithPolicyFile, WithPolicy).
var ErrNoCatalog = errors.New("the control plane has no catalog to register in")

// WithControlPlane makes cp the mesh's control plane, for example
// consul.New(consul.Config{Client: client}) of package
// github.com/inmesh/inmesh/consul. It excludes WithPolicyFile and
// WithPolicy. The mesh takes cp over: its Close closes cp.
func WithControlPlane(cp ControlPlane) Option {
	return optionFunc(func(c *config) { c.plane = cp })
}

// localPlane is the control plane of WithPolicyFile and WithPolicy: a
// policy and nothing else.
type localPlane struct {
	file string           // WithPolicyFile
	doc  *policy.Document // WithPolicy
}

var _ ControlPlane = (*localPlane)(nil)

func (p *localPlane) Policy(w Workload) (policy.Source, error) {
	if p.file == "" {
		return policy.NewStaticSource(p.doc), nil
	}
	file := policy.NewFileSource(p.file, w.Logger)
	// A missing file is a mistake to report now, not a policy to wait for;
	// an invalid one is waited for, as an edit can fix it.
	if _, err := os.Stat(file.Path()); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("policy file %s: %w", file.Path(), fs.ErrNotExist)
	}
	return file, nil
}

func (*localPlane) Endpoints(Workload) (EndpointSource, error) { return nil, nil }

func (*localPlane) Identity(context.Context, Workload) (identity.Source, error) { return nil, nil }

func (*localPlane) Authorizer(Workload) (*Authorization, error) { return nil, nil }

func (p *localPlane) Register(context.Context, Workload, Instance) error {
	what := "a fixed policy"
	if p.file != "" {
		what = "the policy file " + p.file
	}
	return fmt.Errorf("%w: it is %s; Register needs a control plane with a catalog, such as Consul's", ErrNoCatalog, what)
}

func (*localPlane) Close() error { return nil }

// Instance is one instance of this workload, as Register puts it in the
// control plane's catalog.
type Instance struct {
	// ID is the instance's ID in the catalog; "" means
	// <service>-<host>-<port>.
	ID string
	// Address is where the instance serves, host:port.
	Address string
	// Tags and Meta become the instance's labels at its callers (with
	// Consul: Meta as is, each tag t as "tag:<t>").
	Tags []string
	Meta map[string]string
}

// Register puts an instance of this workload in the control plane's
// catalog (with Consul, as a Connect-native instance with a TCP health
// check that Consul runs against inst.Address, so callers, meshes and
// Envoy sidecars alike, only see it while it accepts connections).
// Close takes it out. A control plane without a catalog (WithPolicyFile,
// WithPolicy) returns an error matching ErrNoCatalog.
func (m *Mesh) Register(ctx context.Context, inst Instance) error {
	if m.plane == nil {
		return errors.New("mesh: Register: the Mesh was not made by New")
	}
	host, portText, err := net.SplitHostPort(inst.Address)
	if err != nil {
		return fmt.Errorf("mesh: Register: address %q: %w", inst.Address, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < 1 || port > 65535 {
		return fmt.Errorf("mesh: Register: address %q: bad port", inst.Address)
	}
	if inst.ID == "" {
		inst.ID = fmt.Sprintf("%s-%s-%d", m.cfg.service, strings.ReplaceAll(host, ":", "_"), port)
	}
	if err := m.plane.Register(ctx, m.workload(), inst); err != nil {
		return fmt.Errorf("mesh: Register %s: %w", inst.ID, err)
	}
	m.log.Info("registered", "id", inst.ID, "address", inst.Address, "control_plane", m.source.String())
	m.registered(inst.ID)
	return nil
}

// workload is what the mesh tells its control plane about itself.
func (m *Mesh) workload() Workload {
	return Workload{Service: m.cfg.service, Logger: m.log, PolicyStaleness: m.instr.SetPolicyStaleness}
}

// watchedSet records the destinations whose endpoints are watched.
type watchedSet struct {
	mu      sync.Mutex
	started map[string]chan struct{} // closed at the first answer
	seen    sync.Map                 // service -> *watchMark: the same, for a lock-free check on the request path
}

// watchMark is what the request path leaves on a watched destination: that
// it was called since the last sweep.
type watchMark struct {
	used atomic.Bool
	idle int // sweeps in a row without a call (the sweeping goroutine's)
}

// ensureWatched starts watching the endpoints of service, with a control
// plane that gives endpoints, if it is not watched yet, waits for its first
// answer, and reports whether it started a watch. Without such a control
// plane it is a nil check.
func (m *Mesh) ensureWatched(ctx context.Context, service string) bool {
	return m.endpoints != nil && m.startWatch(ctx, service)
}

// findService asks the endpoint source, when it is a ServiceFinder,
// whether name, which names no service of the policy in force, is a
// service of the mesh, and reports whether the state in force now holds
// it. Every call to an outside host asks: it allocates nothing of its own.
func (m *Mesh) findService(ctx context.Context, name string) bool {
	f, ok := m.endpoints.(ServiceFinder)
	if !ok {
		return false
	}
	if _, rejected := m.state.Load().policy.Rejected[name]; rejected {
		return false
	}
	if !f.FindService(ctx, name) {
		return false
	}
	_, d := m.destination(m.state.Load(), name)
	return d != nil
}

// ensureWatchedAll is ensureWatched for service and the other services
// its splits and failover targets call (core.Destination.Needs), for the
// adapters that watch once per destination (gRPC's resolver).
func (m *Mesh) ensureWatchedAll(ctx context.Context, service string) bool {
	started := m.ensureWatched(ctx, service)
	if _, d := m.destination(m.state.Load(), service); d != nil && m.ensureNeeds(ctx, d) {
		started = true
	}
	return started
}

// ensureNeeds starts watching the other services d's splits and failover
// targets call, when d has some and their watches were not started for
// it yet, and reports whether it started one. A destination recompiled
// with new targets checks again (its mark is its own).
func (m *Mesh) ensureNeeds(ctx context.Context, d *core.Destination) bool {
	if m.endpoints == nil || d.Needs == nil || d.NeedsWatched() {
		return false
	}
	started := false
	for _, n := range d.Needs {
		if m.startWatch(ctx, n) {
			started = true
		}
	}
	d.MarkNeedsWatched()
	return started
}

// startWatch is ensureWatched with an endpoint source. It waits (within
// ctx, and at most firstAnswerWait) for the first answer. Only the
// destinations this process calls are watched. The check of an already
// watched service takes no lock.
func (m *Mesh) startWatch(ctx context.Context, service string) bool {
	w := &m.watched
	if v, ok := w.seen.Load(service); ok {
		if mk := v.(*watchMark); !mk.used.Load() {
			mk.used.Store(true) // once per sweep: no write on the hot path
		}
		return false
	}
	wait := firstAnswerWait
	if len(m.catalog.Load().Endpoints(service)) > 0 {
		wait = 0 // endpoints from the cache serve until the catalog answers
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	w.mu.Lock()
	if ready, ok := w.started[service]; ok {
		// Another call started the watch: wait for its first answer too.
		w.mu.Unlock()
		select {
		case <-ready:
		case <-ctx.Done():
		}
		return true
	}
	ready := make(chan struct{})
	if w.started == nil {
		w.started = map[string]chan struct{}{}
	}
	w.started[service] = ready
	w.mu.Unlock()
	m.endpoints.Watch(ctx, service)
	// Apply the first answer now, not when the follower gets to it: the
	// caller reloads the state next.
	m.onEndpoints()
	mk := &watchMark{}
	mk.used.Store(true)
	w.seen.Store(service, mk)
	close(ready)
	// The services its splits and failover call: again after an idle
	// spell stopped them with it (the first time, the chain that names
	// them may come with the answer above).
	if d := m.state.Load().services[service]; d != nil {
		for _, n := range d.Needs {
			if n != service {
				m.startWatch(ctx, n)
			}
		}
	}
	return true
}

// sweepIdle stops watching the destinations not called during the last
// idleSweeps sweeps, with a control plane that can (see WatchStopper).
// The services a called destination's splits and failover call count as
// called. It runs on the endpoint follower's goroutine.
func (m *Mesh) sweepIdle(stopper WatchStopper) {
	w := &m.watched
	st := m.state.Load()
	used := map[string]bool{}
	w.seen.Range(func(k, v any) bool {
		if v.(*watchMark).used.Swap(false) {
			used[k.(string)] = true
		}
		return true
	})
	for name := range used {
		if d := st.services[name]; d != nil {
			for _, n := range d.Needs {
				used[n] = true
			}
		}
	}
	var idle []string
	w.seen.Range(func(k, v any) bool {
		name, mk := k.(string), v.(*watchMark)
		if used[name] {
			mk.idle = 0
		} else if mk.idle++; mk.idle >= idleSweeps {
			idle = append(idle, name)
		}
		return true
	})
	for _, name := range idle {
		w.mu.Lock()
		delete(w.started, name)
		w.seen.Delete(name)
		w.mu.Unlock()
		stopper.StopWatching(name)
		m.log.Debug("stopped watching an idle destination; its last endpoints stay", "service", name)
	}
	if len(idle) == 0 {
		return
	}
	// A destination is reused by the states after st while its inputs
	// stay: one whose split targets stopped being watched watches them
	// again at its next call.
	for _, d := range st.services {
		if slices.ContainsFunc(d.Needs, func(n string) bool { return slices.Contains(idle, n) }) {
			d.ClearNeedsWatched()
		}
	}
}

// firstAnswerWait bounds how long the first call to a destination waits for
// its endpoints from the control plane.
const firstAnswerWait = 5 * time.Second

// followEndpoints applies every change of the endpoint source until the
// mesh is closed; changed is the source's Changed, taken before any watch
// started, so no change is missed.
func (m *Mesh) followEndpoints(changed <-chan struct{}) {
	if stopper, ok := m.endpoints.(WatchStopper); ok {
		var sweep <-chan time.Time
		t := m.clock.NewTimer(idleSweep)
		sweep = t.C()
		defer func() { t.Stop() }()
		for {
			select {
			case <-changed:
				changed = m.endpoints.Changed()
				m.onEndpoints()
			case <-sweep:
				m.sweepIdle(stopper)
				t = m.clock.NewTimer(idleSweep)
				sweep = t.C()
			case <-m.done:
				return
			}
		}
	}
	for {
		select {
		case <-changed:
		case <-m.done:
			return
		}
		changed = m.endpoints.Changed()
		m.onEndpoints()
	}
}

// onEndpoints applies the endpoint source's current snapshot, when the
// source published it since the last one applied (until then, endpoints
// from the cache keep serving). It reads the snapshot under m.mu, so that
// of two racing calls the last to apply holds the newest.
func (m *Mesh) onEndpoints() {
	m.mu.Lock()
	defer m.mu.Unlock()
	snap := m.endpoints.Current()
	if snap == nil || snap == m.endpointsSeen {
		return
	}
	m.endpointsSeen = snap
	m.catalog.Store(snap)
	if st := m.state.Load(); st != nil {
		m.applyLocked(st.policy)
	}
}

// mergeEndpoints gives each service of the policy its endpoints: the
// static ones the policy lists, or else those of the control plane.
func mergeEndpoints(pol *policy.Snapshot, catalog *discovery.Snapshot) *discovery.Snapshot {
	static := discovery.StaticOf(pol)
	if catalog == nil {
		return static
	}
	out := &discovery.Snapshot{Source: catalog.Source, Services: map[string][]discovery.Endpoint{}, Why: catalog.Why}
	for name := range pol.Services {
		if eps := static.Endpoints(name); len(eps) > 0 {
			out.Services[name] = eps
		} else if eps := catalog.Endpoints(name); eps != nil {
			out.Services[name] = eps
		}
	}
	return out
}

// endpointsFor gives the services of pol their endpoints: with an endpoint
// source, the static ones the policy lists or else the source's; without,
// the policy's.
func (m *Mesh) endpointsFor(pol *policy.Snapshot) *discovery.Snapshot {
	if m.endpoints == nil {
		return discovery.StaticOf(pol)
	}
	return mergeEndpoints(pol, m.catalog.Load())
}
