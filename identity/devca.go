package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"
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

// newRoot makes a self-signed ECDSA P-256 root for td.
func newRoot(td string, now time.Time) (*caRoot, error) {
	key, serial, err := newKeyAndSerial()
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

// newKeyAndSerial returns what every certificate of the dev CA starts
// from: a fresh ECDSA P-256 key and a random serial number.
func newKeyAndSerial() (*ecdsa.PrivateKey, *big.Int, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: dev CA: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	return key, serial, nil
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
