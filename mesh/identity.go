package mesh

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/inmesh/inmesh/identity"
)

// defaultTrustDomain is the trust domain of the shared dev CA when the
// policy names none.
const defaultTrustDomain = "mesh.local"

// WithIdentity sets where this workload's certificate and trust roots come
// from. Without it (and without a control plane that issues identities,
// such as Consul's Connect CA), every mesh of the process shares
// one in-memory dev CA for the policy's trust domain: fine on a laptop and
// in tests, never across processes; the mesh logs it as local-only.
//
// The identity must be this workload's: New fails when its SPIFFE ID names
// another service than WithService's, or, when the policy names a
// trust_domain, belongs to another trust domain.
func WithIdentity(src identity.Source) Option {
	return optionFunc(func(c *config) { c.identity = src })
}

// devCAs are the in-memory dev CAs shared by the meshes of this process,
// one per trust domain. It is process state by design: meshes that share
// no CA could not call each other.
var devCAs struct {
	sync.Mutex
	byDomain map[string]*identity.DevCA
}

// sharedDevCA returns the process's dev CA for trustDomain, creating it.
func sharedDevCA(trustDomain string) (*identity.DevCA, error) {
	devCAs.Lock()
	defer devCAs.Unlock()
	if ca, ok := devCAs.byDomain[trustDomain]; ok {
		return ca, nil
	}
	ca, err := identity.NewDevCA(trustDomain)
	if err != nil {
		return nil, err
	}
	if devCAs.byDomain == nil {
		devCAs.byDomain = map[string]*identity.DevCA{}
	}
	devCAs.byDomain[trustDomain] = ca
	return ca, nil
}

// setupIdentity chooses the identity source once the first policy is in
// force (WithIdentity's, else the control plane's, else the shared dev CA),
// and waits until it has an identity or ctx ends.
func (m *Mesh) setupIdentity(ctx context.Context) error {
	src := m.cfg.identity
	if src == nil {
		cs, err := m.plane.Identity(ctx, m.workload())
		if err != nil {
			return fmt.Errorf("mesh: identity from %s: %w", m.source, err)
		}
		if cs != nil {
			src = cs
			m.identityKind = sourceKind(cs)
		}
	} else {
		m.identityKind = sourceKind(src)
	}
	if src == nil {
		td := m.state.Load().policy.Doc.TrustDomain
		if td == "" {
			td = defaultTrustDomain
		}
		ca, err := sharedDevCA(td)
		if err != nil {
			return fmt.Errorf("mesh: dev CA for %s: %w", td, err)
		}
		if src, err = ca.NewSource(m.cfg.service); err != nil {
			return fmt.Errorf("mesh: dev CA identity for %s: %w", m.cfg.service, err)
		}
		m.identityKind = "dev-ca (in memory, local only)"
		m.log.Warn("identity from an in-memory dev CA shared by this process only; use WithIdentity or a control plane with a CA across processes",
			"trust_domain", td)
	}
	var id *identity.Identity
	for {
		changed := src.Changed()
		var err error
		if id, err = src.Current(); err == nil {
			break
		} else if ctx.Err() != nil {
			return fmt.Errorf("mesh: no identity before the context ended: %w", err)
		}
		select {
		case <-changed:
		case <-ctx.Done():
		}
	}
	if err := m.checkIdentity(id); err != nil {
		return err
	}
	m.identity = src
	m.instr.SetCertificateExpiry(func() (string, time.Time, bool) {
		id, err := src.Current()
		if err != nil {
			return "", time.Time{}, false
		}
		return id.ID.String(), id.NotAfter(), true
	}, m.clock.Now)
	return nil
}

// checkIdentity refuses, at start, an identity that is not this
// workload's, which would otherwise fail (or, worse, succeed under another
// name) call by call. Its SPIFFE ID must name the service of WithService,
// in the dev CA's form (spiffe://<td>/svc/<service>) or Consul's
// (spiffe://<td>/ns/<ns>/dc/<dc>/svc/<service>). When the policy names a
// trust_domain, the ID must belong to it; a policy that names none (as
// with Consul, whose trust domain is its Connect CA's) leaves the trust
// domain to the identity.
func (m *Mesh) checkIdentity(id *identity.Identity) error {
	svc, ok := id.ID.Service()
	if !ok {
		return fmt.Errorf("mesh: identity %s names no service; want service %q", id.ID, m.cfg.service)
	}
	if svc != m.cfg.service {
		return fmt.Errorf("mesh: identity %s is not service %q", id.ID, m.cfg.service)
	}
	if td := m.state.Load().policy.Doc.TrustDomain; td != "" && !id.ID.MemberOf(td) {
		return fmt.Errorf("mesh: identity %s is not of trust domain %q, the policy's", id.ID, td)
	}
	return nil
}

// sourceKind names an identity source for /certs: its String, or its type.
func sourceKind(src identity.Source) string {
	if s, ok := src.(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprintf("%T", src)
}

// Identity returns this workload's identity in force: its SPIFFE ID,
// certificate and trust roots.
func (m *Mesh) Identity() (*identity.Identity, error) {
	return m.identity.Current()
}

// ServerTLSConfig returns the TLS configuration of this workload's servers:
// its certificate (rotated without restart), TLS 1.2 at least, and the
// verification of every client's certificate against the trust roots, as
// SPIFFE X509-SVIDs. Use it with Handler, which authorizes the verified
// caller. Each call returns a new *tls.Config that the caller may modify.
func (m *Mesh) ServerTLSConfig() *tls.Config {
	return identity.ServerConfig(m.identity)
}

// clientTLS returns the TLS configuration for calls to service.
func (m *Mesh) clientTLS(service string) *tls.Config {
	return identity.ClientConfig(m.identity, service)
}

// CertView is what /certs serves.
type CertView struct {
	Source      string     `json:"source"`
	ID          string     `json:"id,omitempty"`
	TrustDomain string     `json:"trust_domain,omitempty"`
	Serial      string     `json:"serial,omitempty"`
	NotBefore   time.Time  `json:"not_before,omitzero"`
	NotAfter    time.Time  `json:"not_after,omitzero"`
	ExpiresIn   string     `json:"expires_in,omitempty"`
	Roots       []RootView `json:"roots,omitempty"`
	Error       string     `json:"error,omitempty"`
}

// RootView is one trust anchor on /certs.
type RootView struct {
	Subject  string    `json:"subject"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
}

func (m *Mesh) adminCerts(w http.ResponseWriter, _ *http.Request) {
	v := CertView{Source: m.identityKind}
	id, err := m.identity.Current()
	if err != nil {
		v.Error = err.Error()
		writeJSON(w, http.StatusServiceUnavailable, v)
		return
	}
	v.ID = id.ID.String()
	v.TrustDomain = id.TrustDomain
	v.Serial = id.Serial()
	v.NotBefore = id.Certificate.Leaf.NotBefore
	v.NotAfter = id.NotAfter()
	v.ExpiresIn = id.NotAfter().Sub(m.clock.Now()).Round(time.Second).String()
	for _, r := range id.Roots {
		v.Roots = append(v.Roots, RootView{Subject: r.Subject.String(), Serial: r.SerialNumber.Text(16), NotAfter: r.NotAfter})
	}
	writeJSON(w, http.StatusOK, v)
}
