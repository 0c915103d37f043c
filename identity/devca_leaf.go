package identity

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Renewal window of the dev CA's leaves, as fractions of their lifetime.
const (
	renewMin = 0.6
	renewMax = 0.9
)

// Issue signs a new leaf certificate for id with the current root: a new
// ECDSA P-256 key, id as the single URI SAN, KeyUsage DigitalSignature,
// ExtKeyUsage ServerAuth and ClientAuth, CA=false, valid from a minute ago
// for ttl (ttl <= 0 means the CA's leaf lifetime), never beyond the root.
// The result holds the leaf only (no intermediates), its PrivateKey and its
// parsed Leaf. Issue signs any non-zero id, even of another trust domain:
// the dev CA is a test tool.
func (ca *DevCA) Issue(id ID, ttl time.Duration) (*tls.Certificate, error) {
	if id.IsZero() {
		return nil, errors.New("identity: dev CA: cannot issue for the zero ID")
	}
	if ttl <= 0 {
		ttl = ca.cfg.leafTTL
	}
	return ca.issue(ca.state.Load(), id, ca.cfg.clock.Now(), ttl)
}

// issue signs a leaf for id with st's signer.
func (ca *DevCA) issue(st *caState, id ID, now time.Time, ttl time.Duration) (*tls.Certificate, error) {
	key, serial, err := newKeyAndSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(ttl)
	if rootEnd := st.signer.cert.NotAfter; notAfter.After(rootEnd) {
		notAfter = rootEnd
	}
	subject := pkix.Name{Organization: []string{"inmesh"}}
	if svc, ok := id.Service(); ok {
		subject.CommonName = truncate(svc, 64)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.url()},
	}
	leaf, err := signWith(st.signer, tmpl, key.Public())
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// sign signs any template with the current root; tests use it to make
// certificates the CA would never issue.
func (ca *DevCA) sign(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	return signWith(ca.state.Load().signer, tmpl, pub)
}

func signWith(r *caRoot, tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.cert, pub, r.key)
	if err != nil {
		return nil, fmt.Errorf("identity: dev CA: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("identity: dev CA: %w", err)
	}
	return c, nil
}

// Source returns a Source of the identity spiffe://<td>/svc/<service>, with a
// leaf issued at once. service must be a valid path segment.
//
// The source renews its leaf lazily: the first Current call after a random
// point between 60% and 90% of the leaf's lifetime issues a new leaf (under
// a lock, one caller does it) and publishes it atomically; other calls take
// no lock. No goroutine is involved, so a source nobody asks does not renew,
// and its Changed channel is closed by the Current call that renews, by
// [DevCA.Rotate] and by [DevCA.DropRoot]. If a renewal fails, the current
// leaf is kept until it expires and renewal is tried again at the next call.
//
// Each call returns a new source with its own leaf; the CA keeps every source
// it returned, to update it on Rotate and DropRoot. A bad service name (or a
// failed issue) gives a source whose Current returns the error, so that
// `mesh.WithIdentity(ca.Source("billing"))` reads in one line; NewSource
// returns the error instead.
func (ca *DevCA) Source(service string) Source {
	src, err := ca.NewSource(service)
	if err != nil {
		return errorSource{err: err}
	}
	return src
}

// NewSource is Source with the error of a bad service name or a failed
// issue returned rather than kept in the source.
func (ca *DevCA) NewSource(service string) (Source, error) {
	id, err := NewServiceID(ca.td, service)
	if err != nil {
		return nil, err
	}
	s := &devSource{ca: ca, id: id}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if err := s.reissue(ca.state.Load()); err != nil {
		return nil, err
	}
	ca.sources = append(ca.sources, s)
	return s, nil
}

// errorSource is a Source that never has an identity: it carries the error
// that kept one from being made, so that whoever uses it denies with that
// reason.
type errorSource struct{ err error }

func (e errorSource) Current() (*Identity, error) {
	return nil, fmt.Errorf("%w: %w", ErrNoIdentity, e.err)
}

func (errorSource) Changed() <-chan struct{} { return nil }

// devSource is the Source of one service of a DevCA.
type devSource struct {
	ca      *DevCA
	id      ID
	mu      sync.Mutex // serialises renewals
	cur     atomic.Pointer[devLeaf]
	changed notifier
}

// devLeaf is the published state of a devSource.
type devLeaf struct {
	ident   *Identity
	renewAt time.Time
}

var _ Source = (*devSource)(nil)

// Current returns the identity, renewing the leaf first when its renewal
// point has passed.
func (s *devSource) Current() (*Identity, error) {
	cur := s.cur.Load()
	if s.ca.cfg.clock.Now().Before(cur.renewAt) {
		return cur.ident, nil
	}
	return s.renew()
}

func (s *devSource) Changed() <-chan struct{} { return s.changed.wait() }

// renew issues a new leaf if one is still due once the lock is held.
func (s *devSource) renew() (*Identity, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.Load()
	now := s.ca.cfg.clock.Now()
	if now.Before(cur.renewAt) {
		return cur.ident, nil // another caller renewed
	}
	if err := s.reissueLocked(s.ca.state.Load(), now); err != nil {
		if now.Before(cur.ident.NotAfter()) {
			s.ca.cfg.logger.Warn("identity: dev CA could not renew a leaf; keeping the current one",
				"id", s.id.String(), "not_after", cur.ident.NotAfter(), "error", err)
			return cur.ident, nil
		}
		return nil, fmt.Errorf("%w: %w", ErrNoIdentity, err)
	}
	next := s.cur.Load()
	s.ca.cfg.logger.Debug("identity: dev CA renewed a leaf",
		"id", s.id.String(), "serial", next.ident.Serial(), "not_after", next.ident.NotAfter())
	return next.ident, nil
}

// reissue issues a new leaf from st and publishes it.
func (s *devSource) reissue(st *caState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reissueLocked(st, s.ca.cfg.clock.Now())
}

func (s *devSource) reissueLocked(st *caState, now time.Time) error {
	ttl := s.ca.cfg.leafTTL
	cert, err := s.ca.issue(st, s.id, now, ttl)
	if err != nil {
		return err
	}
	lifetime := cert.Leaf.NotAfter.Sub(now)
	frac := renewMin + (renewMax-renewMin)*mrand.Float64()
	s.publish(&devLeaf{
		ident:   bundleIdentity(s.id, cert, st),
		renewAt: now.Add(time.Duration(float64(lifetime) * frac)),
	})
	return nil
}

// republish publishes the current leaf with st's roots.
func (s *devSource) republish(st *caState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.Load()
	s.publish(&devLeaf{ident: bundleIdentity(s.id, cur.ident.Certificate, st), renewAt: cur.renewAt})
}

// signedBy reports whether the current leaf was signed by r.
func (s *devSource) signedBy(r *caRoot) bool {
	leaf := s.cur.Load().ident.Certificate.Leaf
	return bytes.Equal(leaf.RawIssuer, r.cert.RawSubject) && leaf.CheckSignatureFrom(r.cert) == nil
}

// publish swaps in l and fires Changed. s.mu must be held.
func (s *devSource) publish(l *devLeaf) {
	s.cur.Store(l)
	s.changed.notify()
}

// bundleIdentity makes the Identity of a dev CA leaf; the roots and pool are
// shared by every source of the CA state.
func bundleIdentity(id ID, cert *tls.Certificate, st *caState) *Identity {
	return &Identity{ID: id, Certificate: cert, TrustDomain: id.TrustDomain(), Roots: st.certs, Pool: st.pool}
}
