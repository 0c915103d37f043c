package consul

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/policy"
)

// Config says which Consul a control plane talks to. Its zero Prefix is
// DefaultPrefix.
type Config struct {
	// Client talks to the local Consul agent. Required.
	Client *api.Client
	// Prefix is the KV prefix of the policy; "" means DefaultPrefix
	// ("inmesh").
	Prefix string
	// StatusPrefix is the KV prefix under which each registered instance
	// keeps the policy version it applied (<StatusPrefix>/<service>/<id>);
	// "" means Prefix + "-status". It lies outside Prefix, so that the
	// fleet's reports never wake the policy's watch.
	StatusPrefix string
	// Token is the ACL token of every request the control plane makes; ""
	// means the Client's own (CONSUL_HTTP_TOKEN, with api.DefaultConfig).
	// The README lists the permissions a mesh needs; see ACLError.
	Token string
}

// ControlPlane is Consul as a mesh's control plane (a mesh.ControlPlane):
// the policy from KV under the prefix with the L7 config entries applied
// on top (the compiled discovery chain of each destination, this
// workload's service-defaults UpstreamConfig; where an entry speaks, it
// wins), every service Consul knows as a mesh service (asked at the first
// call to a name the policy does not hold: see EndpointSource.FindService),
// the endpoints of the destinations the mesh calls (until they are idle:
// see EndpointSource.StopWatching) from the catalog's connect health
// endpoint (Connect-native instances, and the Envoy sidecars of the
// others: see EndpointSource), this workload's identity from the Connect
// CA (with the TLS server name Envoy expects, see
// IdentitySource.ServerName), the authorization of its callers from
// service-intentions config entries, and Register as a Connect-native
// agent service registration with a TCP health check.
//
// A ControlPlane serves one mesh, which takes it over: mesh.New starts its
// watches, and the mesh's Close stops them and deregisters what Register
// registered. It is safe for concurrent use.
type ControlPlane struct {
	cfg Config

	mu         sync.Mutex
	closed     bool
	closers    []interface{ Close() error } // the sources started, closed by Close
	registered []string                     // service IDs Close deregisters
	reported   []string                     // status keys Close deletes
	entries    *configEntries               // the policy source, made by Policy or Endpoints
}

var _ mesh.ControlPlane = (*ControlPlane)(nil)

// New returns the control plane of cfg, to give mesh.WithControlPlane:
//
//	mesh.New(ctx, mesh.WithService("billing"),
//		mesh.WithControlPlane(consul.New(consul.Config{Client: client})))
//
// It starts nothing: mesh.New does, and reports a Config it cannot use (no
// Client) as its error.
func New(cfg Config) *ControlPlane {
	cfg.Prefix = cleanPrefix(cfg.Prefix)
	cfg.StatusPrefix = statusPrefix(cfg)
	return &ControlPlane{cfg: cfg}
}

// track remembers a source for Close, or closes it at once and fails when
// the control plane is closed already.
func (cp *ControlPlane) track(c interface{ Close() error }) error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.closed {
		_ = c.Close()
		return errClosed
	}
	cp.closers = append(cp.closers, c)
	return nil
}

var errClosed = errors.New("consul: the control plane is closed")

// check reports a Config that cannot work, and a closed control plane.
func (cp *ControlPlane) check() error {
	if cp.cfg.Client == nil {
		return errors.New("consul: Config.Client is nil: set an *api.Client of github.com/hashicorp/consul/api")
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.closed {
		return errClosed
	}
	return nil
}

// Policy implements mesh.ControlPlane: the policy from KV under the prefix,
// one blocking query on it (its staleness goes to w.PolicyStaleness), with
// the config entries applied (see configEntries).
func (cp *ControlPlane) Policy(w mesh.Workload) (policy.Source, error) {
	if err := cp.check(); err != nil {
		return nil, err
	}
	if err := cp.preflight(w.Service); err != nil {
		return nil, err
	}
	return cp.configEntries(w)
}

// configEntries returns the policy source of w, made at the first call:
// the KV policy with the config entries applied (see configEntries).
func (cp *ControlPlane) configEntries(w mesh.Workload) (*configEntries, error) {
	cp.mu.Lock()
	if c := cp.entries; c != nil {
		cp.mu.Unlock()
		return c, nil
	}
	kv := newKVWatch(cp.cfg.Client, cp.cfg.Prefix, w.Logger, w.PolicyStaleness)
	kv.token = cp.cfg.Token
	kv.unresolved = true // configEntries snapshots the document
	c := newConfigEntries(cp.cfg.Client, w.Service, kv, w.Logger)
	cp.entries = c
	cp.mu.Unlock()
	if err := cp.track(c); err != nil {
		return nil, err
	}
	return c, nil
}

// Endpoints implements mesh.ControlPlane: the passing Connect-capable
// instances of each destination (Connect-native ones, and the sidecars of
// the others), from its first call on; a plain instance is not listed.
func (cp *ControlPlane) Endpoints(w mesh.Workload) (mesh.EndpointSource, error) {
	if err := cp.check(); err != nil {
		return nil, err
	}
	s := startEndpoints(cp.cfg.Client, orDefault(w.Logger))
	s.token = cp.cfg.Token // before any watch starts
	entries, err := cp.configEntries(w)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.entries = entries
	entries.endpoints.Store(s)
	if err := cp.track(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Identity implements mesh.ControlPlane: the Connect leaf of w's service
// and the CA roots (see NewIdentitySource).
func (cp *ControlPlane) Identity(ctx context.Context, w mesh.Workload) (identity.Source, error) {
	if err := cp.check(); err != nil {
		return nil, err
	}
	if err := cp.checkLeaf(ctx, w.Service); err != nil {
		return nil, err
	}
	s := startIdentity(cp.cfg.Client, cp.cfg.Token, w.Service, orDefault(w.Logger))
	if err := s.val.await(ctx, "Connect identity for "+w.Service, s.last.load); err != nil {
		return nil, err
	}
	if err := cp.track(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Authorizer implements mesh.ControlPlane: the service-intentions of w's
// service decide every request, with Consul's precedence (see Intentions);
// the policy's authorization blocks do not apply.
func (cp *ControlPlane) Authorizer(w mesh.Workload) (*mesh.Authorization, error) {
	if err := cp.check(); err != nil {
		return nil, err
	}
	s := startIntentions(cp.cfg.Client, cp.cfg.Token, w.Service, orDefault(w.Logger))
	if err := cp.track(s); err != nil {
		return nil, err
	}
	return &mesh.Authorization{Authorize: s.authorizeRequest, Ready: s.val.ready}, nil
}

// Register implements mesh.ControlPlane: it registers inst with the local
// agent as a Connect-native instance of w's service (Connect.Native: it
// serves mutual TLS with its Connect leaf itself, so Envoy sidecars of other
// services, and other meshes, find it on the connect health endpoint and
// call it at inst.Address), with a TCP check that Consul runs against
// inst.Address every 2 s (an instance critical for a minute is
// deregistered). Close deregisters it.
func (cp *ControlPlane) Register(ctx context.Context, w mesh.Workload, inst mesh.Instance) error {
	if err := cp.check(); err != nil {
		return err
	}
	host, portText, err := net.SplitHostPort(inst.Address)
	if err != nil {
		return fmt.Errorf("consul: address %q: %w", inst.Address, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return fmt.Errorf("consul: address %q: bad port", inst.Address)
	}
	reg := &api.AgentServiceRegistration{
		ID: inst.ID, Name: w.Service, Address: host, Port: port, Tags: inst.Tags, Meta: inst.Meta,
		Connect: &api.AgentServiceConnect{Native: true},
		Check: &api.AgentServiceCheck{
			Name:                           "inmesh: " + w.Service + " accepts connections",
			TCP:                            inst.Address,
			Interval:                       "2s",
			Timeout:                        "1s",
			Status:                         api.HealthPassing,
			DeregisterCriticalServiceAfter: "1m",
		},
	}
	if err := cp.cfg.Client.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{Token: cp.cfg.Token}.WithContext(ctx)); err != nil {
		err = denied(err, serviceRule(w.Service), "write", "registering "+w.Service)
		return fmt.Errorf("consul: registering %s: %w", inst.ID, err)
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.registered = append(cp.registered, inst.ID)
	return nil
}

// Close deregisters the instances Register registered and stops every
// watch, waiting for them. It is safe to call twice.
func (cp *ControlPlane) Close() error {
	cp.mu.Lock()
	if cp.closed {
		cp.mu.Unlock()
		return nil
	}
	cp.closed = true
	ids, closers, reported := cp.registered, cp.closers, cp.reported
	cp.registered, cp.closers, cp.reported = nil, nil, nil
	cp.mu.Unlock()
	var errs []error
	for _, key := range reported {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := cp.cfg.Client.KV().Delete(key, write(&api.WriteOptions{}, cp.cfg.Token).WithContext(ctx)); err != nil {
			errs = append(errs, fmt.Errorf("consul: deleting the status %s: %w", key, err))
		}
		cancel()
	}
	for _, id := range ids {
		// Close takes no context; each deregistration gets a bounded one,
		// so an unreachable agent delays Close by at most 5 s per instance.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		q := query(&api.QueryOptions{}, cp.cfg.Token).WithContext(ctx)
		if err := cp.cfg.Client.Agent().ServiceDeregisterOpts(id, q); err != nil {
			errs = append(errs, fmt.Errorf("consul: deregistering %s: %w", id, err))
		}
		cancel()
	}
	for _, c := range closers {
		_ = c.Close()
	}
	return errors.Join(errs...)
}
