package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/clock"
	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/internal/meshlink"
	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/telemetry"
)

// Mesh is the data plane of one workload. It holds the policy in force, the
// endpoints of its destinations and the live state of breakers, budgets and
// outlier detection, and hands out the HTTP client, round trippers and
// diagnostics that enforce them.
//
// A Mesh is safe for concurrent use. Its request path reads an immutable
// snapshot through an atomic pointer and takes no lock.
type Mesh struct {
	cfg     *config
	log     *slog.Logger
	clock   clock.Clock
	source  policy.Source
	instr   *telemetry.Instruments
	tracing *telemetry.Tracing
	env     core.Env        // what the core's calls share
	link    *meshlink.Plane // what the adapter packages see of the mesh

	state atomic.Pointer[state]

	// mu serializes compilation; reg is only used under it.
	mu            sync.Mutex
	reg           *registry
	endpointsSeen *discovery.Snapshot // the endpoint source's last snapshot applied

	audit auditLimiter // the log lines of would-be denials under authorization mode audit

	rejection atomic.Pointer[rejection] // last rejected document, for the admin page
	updates   atomic.Int64              // policies applied
	rejects   atomic.Int64              // policies rejected

	transport *http.Transport // the mesh's own transport, used when RoundTripper gets nil
	client    *http.Client

	identity     identity.Source // this workload's credentials; set before New returns
	identityKind string          // where they come from, for /certs

	// plane is the control plane; endpoints, authorizeCaller and
	// authzReady are what it gave at New (nil when it gives none), so the
	// request path asks no interface what it has.
	plane           ControlPlane
	status          *statusReports // nil unless plane is a StatusReporter
	endpoints       EndpointSource
	authorizeCaller func(caller, method, path string, header RequestHeader) identity.Decision
	authzReady      <-chan struct{}
	watched         watchedSet                         // destinations whose endpoints are watched
	catalog         atomic.Pointer[discovery.Snapshot] // endpoints from the control plane (or the cache), nil without an endpoint source

	// transports are the transports the mesh created (per-destination mTLS
	// clones), whose idle connections Close closes, and those of a service
	// when it loses an endpoint.
	transportsMu sync.Mutex
	transports   []tracked

	cancel    context.CancelFunc
	done      <-chan struct{} // closed by Close: watchers of the state stop
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// rejection records a policy document that did not validate.
type rejection struct {
	At     time.Time `json:"at"`
	Source string    `json:"source"`
	Error  string    `json:"error"`
}

// New starts a mesh for one workload. It blocks until a first valid policy,
// this workload's identity and, with a control plane that authorizes
// callers, that authorization are loaded, or ctx ends; in the second case it
// returns an error that says why nothing could be loaded. A policy file that
// does not exist is an error at once (wrapping fs.ErrNotExist), and so is a
// control plane that cannot start (a Consul configuration without a
// client); a document that does not validate is waited for, since an edit
// may fix it. Close releases what New started, the control plane included.
func New(ctx context.Context, opts ...Option) (*Mesh, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		if cfg.plane != nil {
			_ = cfg.plane.Close() // New takes the control plane over, also to fail
		}
		return nil, err
	}
	m := &Mesh{
		cfg:     cfg,
		log:     cfg.logger.With("component", "inmesh", "workload", cfg.service),
		clock:   cfg.clock,
		reg:     newRegistry(),
		tracing: telemetry.NewTracing(cfg.tracerProvider, cfg.propagator),
	}
	if m.instr, err = telemetry.New(cfg.meterProvider); err != nil {
		if cfg.plane != nil {
			_ = cfg.plane.Close()
		}
		return nil, fmt.Errorf("mesh: telemetry: %w", err)
	}
	m.env = core.Env{Clock: m.clock, Log: m.log, Instr: m.instr, Err: fromCore, Rand: cfg.rand, Failures: &core.FailureLog{}}
	m.instr.SetBreakerStates(m.breakerStates)
	m.link = m.newLink()
	m.plane = cfg.plane
	if m.plane == nil {
		m.plane = &localPlane{file: cfg.policyFile, doc: cfg.policyDoc}
	}
	m.transport = newTransport()
	m.client = &http.Client{Transport: m.RoundTripper(nil)}
	// The mesh's goroutines live until Close, not until New's ctx ends
	// (which only bounds the wait for a first policy).
	runCtx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.startStatusReports()
	m.done = runCtx.Done()
	if err := m.startPlane(); err != nil {
		m.Close()
		return nil, err
	}
	first := make(chan struct{})
	var firstOnce sync.Once
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		err := m.source.Watch(runCtx, func(ev policy.Event) {
			if m.onPolicy(ev) {
				firstOnce.Do(func() { close(first) })
			}
		})
		if err != nil && !errors.Is(err, context.Canceled) {
			m.log.Error("policy source stopped", "source", m.source.String(), "err", err)
		}
	}()

	var fromCache <-chan time.Time
	if cfg.cacheDir != "" {
		t := time.NewTimer(cacheWait)
		defer t.Stop()
		fromCache = t.C
	}
wait:
	for {
		select {
		case <-first:
			break wait
		case <-fromCache:
			fromCache = nil
			if m.startFromCache() {
				break wait
			}
		case <-ctx.Done():
			m.Close()
			reason := "nothing loaded yet"
			if r := m.rejection.Load(); r != nil {
				reason = r.Error
			}
			return nil, fmt.Errorf("mesh: no valid policy from %s before the context ended (%w): %s", m.source, ctx.Err(), reason)
		}
	}
	if err := m.setupIdentity(ctx); err != nil {
		m.Close()
		return nil, err
	}
	if m.authzReady != nil && !m.servingFromCache() {
		select {
		case <-m.authzReady:
		case <-ctx.Done():
			m.Close()
			return nil, fmt.Errorf("mesh: no caller authorization from %s before the context ended: %w", m.source, ctx.Err())
		}
	}
	return m, nil
}

// startPlane asks the control plane for the policy source, the endpoint
// source and the authorization of callers, and starts following the
// endpoints.
func (m *Mesh) startPlane() error {
	w := m.workload()
	src, err := m.plane.Policy(w)
	if err != nil {
		return fmt.Errorf("mesh: %w", err)
	}
	if src == nil {
		return errors.New("mesh: control plane: Policy returned no source")
	}
	m.source = src
	if m.endpoints, err = m.plane.Endpoints(w); err != nil {
		return fmt.Errorf("mesh: control plane %s: endpoints: %w", src, err)
	}
	if m.endpoints != nil {
		changed := m.endpoints.Changed() // before any watch starts: no change is missed
		// What the source knows already is in force from the first state
		// on (the last-known-good cache may still replace it at start).
		if snap := m.endpoints.Current(); snap != nil {
			m.endpointsSeen = snap
			m.catalog.Store(snap)
		}
		m.wg.Go(func() { m.followEndpoints(changed) })
	}
	az, err := m.plane.Authorizer(w)
	if err != nil {
		return fmt.Errorf("mesh: control plane %s: authorization: %w", src, err)
	}
	if az != nil {
		if az.Authorize == nil {
			return fmt.Errorf("mesh: control plane %s: an Authorization without Authorize", src)
		}
		m.authorizeCaller, m.authzReady = az.Authorize, az.Ready
	}
	return nil
}

// newTransport returns the mesh's own transport for mesh traffic: the
// settings of http.DefaultTransport with more idle connections per endpoint,
// since every endpoint of a busy destination is a host of its own.
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 64
	return t
}

// onPolicy applies one event of the policy source and reports whether a
// policy is in force afterwards.
func (m *Mesh) onPolicy(ev policy.Event) bool {
	ctx := context.Background()
	if ev.Err != nil {
		m.rejects.Add(1)
		m.rejection.Store(&rejection{At: m.clock.Now(), Source: m.source.String(), Error: ev.Err.Error()})
		m.instr.RecordPolicyUpdate(ctx, "rejected", m.source.String())
		keep := "none"
		if st := m.state.Load(); st != nil {
			keep = st.policy.Version
		}
		m.log.Warn("policy rejected; the last valid version stays in force",
			"source", m.source.String(), "in_force", keep, "err", ev.Err)
		return m.state.Load() != nil
	}
	snap := ev.Snapshot
	m.apply(snap)
	m.updates.Add(1)
	m.instr.RecordPolicyUpdate(ctx, "applied", m.source.String())
	m.log.Info("policy applied", "source", snap.Source, "version", snap.Version, "hash", snap.Hash, "services", len(snap.Services))
	m.statusChanged()
	return true
}

// apply compiles pol with the endpoints in force and publishes the new
// state, then tells the watchers of the previous one (see watch). The
// endpoints are read under m.mu, so a policy and an endpoint update that
// race both end up in the last state.
func (m *Mesh) apply(pol *policy.Snapshot) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.applyLocked(pol)
}

// reapply recompiles the policy in force, after an endpoint update.
func (m *Mesh) reapply() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if st := m.state.Load(); st != nil {
		m.applyLocked(st.policy)
	}
}

// applyLocked is apply with m.mu held.
func (m *Mesh) applyLocked(pol *policy.Snapshot) {
	eps := m.endpointsFor(pol)
	old := m.state.Load()
	st := m.compile(pol, eps)
	st.seq = 1
	if old != nil {
		st.seq = old.seq + 1
	}
	st.linkState(m)
	m.state.Store(st)
	if old != nil {
		close(old.replaced)
		m.closeDeparted(old, st)
	}
	m.saveCache(st)
}

// watch calls fn with the state in force, then with every state published
// after it, on the calling goroutine, until ctx ends or the mesh is closed.
// fn sees each state at most once and may miss intermediate ones when
// publications come faster than it runs, never the last one. This is how
// long-lived consumers of the state (the gRPC resolver) follow policy and
// endpoint changes; the request path just loads m.state.
func (m *Mesh) watch(ctx context.Context, fn func(*state)) {
	for {
		st := m.state.Load()
		fn(st)
		select {
		case <-st.replaced:
		case <-ctx.Done():
			return
		case <-m.done:
			return
		}
	}
}

// tracked is a transport the mesh created for the traffic toward service.
type tracked struct {
	service string
	t       *http.Transport
}

// track remembers a transport the mesh created for service, so Close, and
// the departure of one of service's endpoints, can close its idle
// connections.
func (m *Mesh) track(service string, t *http.Transport) {
	m.transportsMu.Lock()
	defer m.transportsMu.Unlock()
	m.transports = append(m.transports, tracked{service: service, t: t})
}

// closeDeparted closes the idle connections that lead to endpoints old had
// and st has not, so they do not stay open until their idle timeout. An
// http.Transport closes its idle connections all at once, not per address:
// on such a change the mesh's own transport (plaintext traffic of every
// service) closes all its idle connections, and of the mTLS transports,
// which are per destination service, those of the services that lost an
// endpoint (or left the policy). Connections in use are not interrupted;
// the others are dialed again on demand. A transport given to RoundTripper
// is the application's, and left alone.
func (m *Mesh) closeDeparted(old, st *state) {
	lost := departed(old, st)
	if len(lost) == 0 {
		return
	}
	m.transport.CloseIdleConnections()
	m.transportsMu.Lock()
	defer m.transportsMu.Unlock()
	for _, tr := range m.transports {
		if slices.Contains(lost, tr.service) {
			tr.t.CloseIdleConnections()
		}
	}
}

// departed returns the services of old that have an endpoint address st
// lacks, or that st does not have.
func departed(old, st *state) []string {
	var lost []string
	for name := range old.services {
		before := old.endpoints.Endpoints(name)
		if len(before) == 0 {
			continue
		}
		if st.services[name] == nil {
			lost = append(lost, name)
			continue
		}
		after := st.endpoints.Endpoints(name)
		if sameAddresses(before, after) {
			// Most updates leave most services' endpoints: no set.
			continue
		}
		now := make(map[string]struct{}, len(after))
		for _, ep := range after {
			now[ep.Address] = struct{}{}
		}
		for _, ep := range before {
			if _, ok := now[ep.Address]; !ok {
				lost = append(lost, name)
				break
			}
		}
	}
	return lost
}

// sameAddresses reports whether a and b have the same addresses, in order.
func sameAddresses(a, b []discovery.Endpoint) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Address != b[i].Address {
			return false
		}
	}
	return true
}

// Service returns this workload's service name.
func (m *Mesh) Service() string { return m.cfg.service }

// PolicyVersion returns the version of the policy in force.
func (m *Mesh) PolicyVersion() string {
	if st := m.state.Load(); st != nil {
		return st.policy.Version
	}
	return ""
}

// HTTPClient returns an http.Client whose transport is m.RoundTripper(nil).
// It has no overall timeout of its own: the policy's timeouts apply. The
// same client is returned on every call. Its CloseIdleConnections closes
// the idle connections of every transport under it (see RoundTripper);
// those toward an endpoint that leaves the policy or the catalog are closed
// by the mesh itself.
func (m *Mesh) HTTPClient() *http.Client { return m.client }

// Close stops every goroutine the mesh started, waits for them, and closes
// the idle connections of the mesh's own transport. It is safe to call more
// than once; calls made through the mesh after Close keep using the last
// state in force.
func (m *Mesh) Close() error {
	m.closeOnce.Do(func() {
		m.stopStatusReports() // before the plane takes the instances' status out
		if m.plane != nil {
			if err := m.plane.Close(); err != nil {
				m.log.Warn("closing the control plane failed", "source", m.source, "err", err)
			}
		}
		m.cancel()
		m.wg.Wait()
		m.transport.CloseIdleConnections()
		m.transportsMu.Lock()
		for _, tr := range m.transports {
			tr.t.CloseIdleConnections()
		}
		m.transportsMu.Unlock()
		_ = m.instr.Close()
	})
	return nil
}
