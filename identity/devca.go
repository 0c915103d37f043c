package identity

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/inmesh/inmesh/internal/atomicfile"
)

// File names of a dev CA directory (see [LoadOrCreateDevCA]).
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

// Renewal window of the dev CA's leaves, as fractions of their lifetime.
const (
	renewMin = 0.6
	renewMax = 0.9
)

// DevCA is a certificate authority for local development and tests: it signs
// SPIFFE leaf certificates (X509-SVIDs) for the services of one trust domain
// with an ECDSA P-256 root it keeps in memory (or, with
// [LoadOrCreateDevCA], in a directory shared by processes).
//
// It is not a production CA: keys live in memory or in plain files, and it
// signs whatever ID it is asked to. A DevCA is safe for concurrent use.
type DevCA struct {
	td  string
	cfg caConfig

	state atomic.Pointer[caState] // read without lock by issuers

	mu      sync.Mutex   // serialises Rotate, DropRoot and Source registration
	sources []*devSource // every source handed out, updated on Rotate and DropRoot
}

// caRoot is one root certificate and its key.
type caRoot struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// caState is the immutable trust bundle of a DevCA: every root it trusts and
// the one it signs with.
type caState struct {
	signer *caRoot
	roots  []*caRoot
	certs  []*x509.Certificate // the roots' certificates, for Identity.Roots
	pool   *x509.CertPool
}

func newCAState(signer *caRoot, roots []*caRoot) *caState {
	st := &caState{signer: signer, roots: roots, pool: x509.NewCertPool()}
	for _, r := range roots {
		st.certs = append(st.certs, r.cert)
		st.pool.AddCert(r.cert)
	}
	return st
}

// NewDevCA returns a dev CA for trustDomain with a new in-memory root: ECDSA
// P-256, self-signed, valid for ten years from an hour ago, with the URI SAN
// spiffe://<trustDomain>. The trust domain must be valid as in [ParseID].
func NewDevCA(trustDomain string, opts ...CAOption) (*DevCA, error) {
	if problem := checkTrustDomain(trustDomain); problem != "" {
		return nil, fmt.Errorf("identity: dev CA: %s", problem)
	}
	cfg := newCAConfig(opts)
	root, err := newRoot(trustDomain, cfg.clock.Now())
	if err != nil {
		return nil, err
	}
	return newDevCA(trustDomain, cfg, root), nil
}

func newDevCA(td string, cfg caConfig, root *caRoot) *DevCA {
	ca := &DevCA{td: td, cfg: cfg}
	ca.state.Store(newCAState(root, []*caRoot{root}))
	return ca
}

// LoadOrCreateDevCA returns the dev CA kept in dir, creating dir (mode 0700)
// and the CA when there is none, so that processes started with the same dir
// trust each other. The root certificate is in ca.pem (mode 0644) and its key
// in ca-key.pem (mode 0600), which also carries a copy of the certificate so
// that it alone is a complete CA.
//
// Creation is atomic: the files are written under temporary names and
// ca-key.pem is then hard-linked into place, which fails if it exists, so of
// several processes starting together exactly one creates the CA and the
// others load it. ca.pem is restored from ca-key.pem when missing.
//
// A CA in dir whose root names another trust domain is an error that names
// both; so are unreadable files, a key that does not match ca.pem, and a
// ca.pem without ca-key.pem (it is never replaced). The roots added by
// [DevCA.Rotate] are kept in memory only.
func LoadOrCreateDevCA(dir, trustDomain string, opts ...CAOption) (*DevCA, error) {
	if problem := checkTrustDomain(trustDomain); problem != "" {
		return nil, fmt.Errorf("identity: dev CA: %s", problem)
	}
	cfg := newCAConfig(opts)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("identity: dev CA: %w", err)
	}
	root, err := loadRootFiles(dir)
	if errors.Is(err, fs.ErrNotExist) {
		certPath := filepath.Join(dir, CACertFile)
		if _, serr := os.Lstat(certPath); serr == nil {
			// Creators link ca-key.pem before they write ca.pem: either one
			// just finished (read again), or this ca.pem is not ours and
			// is never replaced.
			root, err = loadRootFiles(dir)
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("identity: dev CA: %s exists without %s; add the key or remove it", certPath, CAKeyFile)
			}
		} else {
			root, err = createRootFiles(dir, trustDomain, cfg.clock.Now())
		}
	}
	if err != nil {
		return nil, err
	}
	td, err := rootTrustDomain(root.cert)
	if err != nil {
		return nil, fmt.Errorf("identity: dev CA in %s: %w", dir, err)
	}
	if td != trustDomain {
		return nil, fmt.Errorf("identity: dev CA in %s is for trust domain %q, not %q", dir, td, trustDomain)
	}
	return newDevCA(trustDomain, cfg, root), nil
}

// rootTrustDomain returns the trust domain of a root's spiffe://<td> URI SAN.
func rootTrustDomain(c *x509.Certificate) (string, error) {
	for _, u := range c.URIs {
		if id, err := idFromURL(u); err == nil {
			return id.TrustDomain(), nil
		}
	}
	return "", errors.New("root certificate names no SPIFFE trust domain (no spiffe:// URI SAN)")
}

// loadRootFiles reads the CA of dir. It returns an error matching
// fs.ErrNotExist only when ca-key.pem does not exist.
func loadRootFiles(dir string) (*caRoot, error) {
	keyPath, certPath := filepath.Join(dir, CAKeyFile), filepath.Join(dir, CACertFile)
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("identity: dev CA: %w", err)
	}
	key, keyCert, err := parseCAKeyFile(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("identity: dev CA: %s: %w", keyPath, err)
	}
	var cert *x509.Certificate
	certPEM, err := os.ReadFile(certPath)
	switch {
	case err == nil:
		certs, perr := parseCertsPEM(certPEM)
		if perr != nil {
			return nil, fmt.Errorf("identity: dev CA: %s: %w", certPath, perr)
		}
		cert = certs[0]
		if keyCert != nil && !keyCert.Equal(cert) {
			return nil, fmt.Errorf("identity: dev CA: %s and the certificate in %s differ", certPath, keyPath)
		}
	case errors.Is(err, fs.ErrNotExist) && keyCert != nil:
		// The creator has not linked ca.pem yet, or it was removed:
		// restore it from the key file.
		cert = keyCert
		if err := atomicfile.Write(certPath, pemCert(cert.Raw), 0o644); err != nil {
			return nil, fmt.Errorf("identity: dev CA: restoring %s: %w", certPath, err)
		}
	default:
		return nil, fmt.Errorf("identity: dev CA: %w", err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("identity: dev CA: %s is not a CA certificate", certPath)
	}
	if !publicKeyEqual(key, cert.PublicKey) {
		return nil, fmt.Errorf("identity: dev CA: the key in %s does not match %s", keyPath, certPath)
	}
	return &caRoot{cert: cert, key: key}, nil
}

// parseCAKeyFile returns the private key of a CA key file and the
// certificate it may also carry.
func parseCAKeyFile(data []byte) (crypto.Signer, *x509.Certificate, error) {
	var (
		key  crypto.Signer
		cert *x509.Certificate
	)
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		switch b.Type {
		case "CERTIFICATE":
			if cert != nil {
				continue
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, nil, err
			}
			cert = c
		case "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY":
			if key != nil {
				return nil, nil, errors.New("more than one private key")
			}
			k, err := parsePrivateKey(b)
			if err != nil {
				return nil, nil, err
			}
			key = k
		}
	}
	if key == nil {
		return nil, nil, errors.New("no PEM private key found")
	}
	return key, cert, nil
}

// parsePrivateKey parses a PKCS #8, SEC 1 (EC) or PKCS #1 (RSA) key.
func parsePrivateKey(b *pem.Block) (crypto.Signer, error) {
	var (
		k   any
		err error
	)
	switch b.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key of type %T cannot sign", k)
	}
	return s, nil
}

// parseCertsPEM returns every CERTIFICATE block of data, at least one.
func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

func publicKeyEqual(key crypto.Signer, pub crypto.PublicKey) bool {
	eq, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(pub)
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// createRootFiles makes a new root and links it into dir, unless another
// process did so first, in which case its CA is loaded.
func createRootFiles(dir, td string, now time.Time) (*caRoot, error) {
	root, err := newRoot(td, now)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(root.key)
	if err != nil {
		return nil, fmt.Errorf("identity: dev CA: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	keyPEM = append(keyPEM, pemCert(root.cert.Raw)...)

	// The key file is linked into place, which fails when it exists: the
	// first creator wins.
	if err := atomicfile.WriteNew(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return loadRootFiles(dir)
		}
		return nil, fmt.Errorf("identity: dev CA: %w", err)
	}
	// Our key is in place: ca.pem must be ours (rename replaces a stale one).
	if err := atomicfile.Write(filepath.Join(dir, CACertFile), pemCert(root.cert.Raw), 0o644); err != nil {
		return nil, fmt.Errorf("identity: dev CA: %w", err)
	}
	return root, nil
}

// newRoot makes a self-signed ECDSA P-256 root for td.
func newRoot(td string, now time.Time) (*caRoot, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: dev CA: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{"inmesh dev CA"},
			CommonName:   "inmesh dev CA " + truncate(td, 40) + " " + truncate(serial.Text(16), 8),
		},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(rootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: td}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("identity: dev CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("identity: dev CA: %w", err)
	}
	return &caRoot{cert: cert, key: key}, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("identity: dev CA: serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// TrustDomain returns the trust domain the CA was made for.
func (ca *DevCA) TrustDomain() string { return ca.td }

// Roots returns the root certificates the CA's sources trust, the signing
// root last. The slice is the caller's; the certificates are shared and must
// not be modified.
func (ca *DevCA) Roots() []*x509.Certificate {
	return slices.Clone(ca.state.Load().certs)
}

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
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: dev CA: %w", err)
	}
	serial, err := newSerial()
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

// Rotate adds a new root, which signs every leaf from now on, while every
// earlier root stays trusted (a cross-rotation: peers with leaves of the old
// root and of the new one accept each other). It works in two steps, so that
// no peer ever meets a leaf of a root it does not trust yet: first every
// source of the CA trusts the new root, then every source gets a new leaf
// from it; Changed fires at each step. Drop the old root afterwards with
// [DevCA.DropRoot]. For a CA of [LoadOrCreateDevCA], the new root lives in
// memory only: other processes sharing the directory do not learn of it.
func (ca *DevCA) Rotate() error {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	old := ca.state.Load()
	root, err := newRoot(ca.td, ca.cfg.clock.Now())
	if err != nil {
		return err
	}
	roots := append(slices.Clone(old.roots), root)
	// Step 1: trust the new root everywhere, still signing with the old.
	trusting := newCAState(old.signer, roots)
	ca.state.Store(trusting)
	for _, s := range ca.sources {
		s.republish(trusting)
	}
	// Step 2: sign with the new root, and give everyone a leaf of it.
	st := &caState{signer: root, roots: trusting.roots, certs: trusting.certs, pool: trusting.pool}
	ca.state.Store(st)
	var errs []error
	for _, s := range ca.sources {
		errs = append(errs, s.reissue(st))
	}
	return errors.Join(errs...)
}

// DropRoot removes the root whose serial number is serial (lower-case hex, as
// [Identity.Serial] and [x509.Certificate.SerialNumber].Text(16) give) from
// the trust bundle: the CA's sources stop trusting it and their Changed
// channels fire, so new and resumed TLS sessions of peers holding a leaf of
// that root fail. A source whose own leaf is of that root first gets a new
// one from the signing root. The signing root (the newest) cannot be
// dropped: [DevCA.Rotate] first. Leaves issued by [DevCA.Issue] are not
// replaced.
func (ca *DevCA) DropRoot(serial string) error {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	old := ca.state.Load()
	i := slices.IndexFunc(old.roots, func(r *caRoot) bool { return serialOf(r.cert) == serial })
	switch {
	case i < 0:
		return fmt.Errorf("identity: dev CA: no root with serial %s", serial)
	case old.roots[i] == old.signer:
		return fmt.Errorf("identity: dev CA: root %s signs new leaves and cannot be dropped; Rotate first", serial)
	}
	dropped := old.roots[i]
	// Step 1: replace the leaves of the dropped root while it is trusted.
	var errs []error
	for _, s := range ca.sources {
		if s.signedBy(dropped) {
			errs = append(errs, s.reissue(old))
		}
	}
	// Step 2: stop trusting it.
	st := newCAState(old.signer, slices.Delete(slices.Clone(old.roots), i, i+1))
	ca.state.Store(st)
	for _, s := range ca.sources {
		s.republish(st)
	}
	return errors.Join(errs...)
}

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
