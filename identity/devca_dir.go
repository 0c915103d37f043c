package identity

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/inmesh/inmesh/internal/atomicfile"
)

// File names of a dev CA directory (see [LoadOrCreateDevCA]).
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

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
	key, keyCert, err := parseKeyPEM(keyPEM)
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
