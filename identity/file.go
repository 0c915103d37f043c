package identity

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/inmesh/inmesh/internal/dirwatch"
)

// Timing and size limits of FileSource.
const (
	fileDebounce    = 100 * time.Millisecond // quiet time after an event before re-reading
	fileMaxDebounce = time.Second            // re-read at the latest this long after the first event of a burst
	filePoll        = 2 * time.Second        // periodic re-read while fsnotify cannot watch
	maxPEMSize      = 1 << 20                // a PEM file larger than this is refused
)

// FileSource is a [Source] that reads PEM files: the certificate chain (leaf
// first, then intermediates), the private key (PKCS #8, SEC 1 or PKCS #1;
// it may be the same file as the chain) and the trust roots. The leaf's
// single URI SAN gives the ID and the trust domain.
//
// It watches the files' directories with fsnotify (and the directories their
// symlinks point to), so in-place writes, editors' write-and-rename and
// Kubernetes-style symlink swaps are all seen; bursts of events are
// debounced (about 100ms). A periodic re-read ([WithRefreshInterval], 30s by
// default) backs the watch up; when fsnotify cannot watch, the files are
// polled every 2s (or the refresh interval, if shorter).
//
// A new set of files that does not load (a file missing or unparsable, a key
// that does not match the certificate, a leaf without a single SPIFFE URI
// SAN) is logged at warning level and the last good identity stays in
// force. A leaf that does not chain to the roots is logged but accepted (it
// happens for a moment during a CA rotation). Current returns an error once
// the certificate in force has expired.
//
// A FileSource is safe for concurrent use. Its goroutine runs until Close.
type FileSource struct {
	certFile, keyFile, rootsFile string // absolute
	cfg                          fileConfig

	cur     atomic.Pointer[Identity]
	changed notifier

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

var _ Source = (*FileSource)(nil)

// NewFileSource loads the three PEM files and starts watching them. It fails
// when the first load fails, with an error naming the file and the problem.
// Paths are made absolute against the current directory. certFile and
// keyFile may name the same file. Close the source to stop its goroutine.
func NewFileSource(certFile, keyFile, rootsFile string, opts ...FileOption) (*FileSource, error) {
	f := &FileSource{
		certFile:  absPath(certFile),
		keyFile:   absPath(keyFile),
		rootsFile: absPath(rootsFile),
		cfg:       newFileConfig(opts),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	// Watch before the first read, so that no change slips in between.
	w := dirwatch.New([]string{f.certFile, f.keyFile, f.rootsFile}, f.cfg.noWatch, "certificate files", f.cfg.logger)
	w.Sync()
	raw, err := f.read()
	if err == nil {
		var id *Identity
		if id, err = f.load(raw); err == nil {
			f.cur.Store(id)
		}
	}
	if err != nil {
		w.Close()
		return nil, err
	}
	go f.run(w, raw.sum())
	return f, nil
}

func absPath(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

// Current returns the identity last loaded. It returns an error matching
// [ErrNoIdentity] when that identity's certificate has expired (by the
// source's clock). After Close it keeps returning the last identity.
func (f *FileSource) Current() (*Identity, error) {
	id := f.cur.Load()
	if now := f.cfg.clock.Now(); now.After(id.NotAfter()) {
		return nil, fmt.Errorf("%w: certificate %s of %s expired at %s",
			ErrNoIdentity, f.certFile, id.ID, id.NotAfter().UTC().Format(time.RFC3339))
	}
	return id, nil
}

// Changed returns a channel closed when a new identity is loaded.
func (f *FileSource) Changed() <-chan struct{} { return f.changed.wait() }

// Close stops watching the files and waits for the source's goroutine to end.
// It always returns nil and is safe to call more than once.
func (f *FileSource) Close() error {
	f.closeOnce.Do(func() { close(f.stop) })
	<-f.done
	return nil
}

// pemFiles is the content of the three files.
type pemFiles struct{ cert, key, roots []byte }

// sum hashes the three files together.
func (p pemFiles) sum() [32]byte {
	h := sha256.New()
	for _, b := range [][]byte{p.cert, p.key, p.roots} {
		h.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(b))))
		h.Write(b)
	}
	var s [32]byte
	h.Sum(s[:0])
	return s
}

// read reads the three files.
func (f *FileSource) read() (pemFiles, error) {
	var p pemFiles
	var err error
	if p.cert, err = readPEMFile(f.certFile); err != nil {
		return p, err
	}
	if p.key, err = readPEMFile(f.keyFile); err != nil {
		return p, err
	}
	p.roots, err = readPEMFile(f.rootsFile)
	return p, err
}

// readPEMFile reads at most maxPEMSize bytes of a file.
func readPEMFile(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxPEMSize+1))
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", path, err)
	}
	if len(data) > maxPEMSize {
		return nil, fmt.Errorf("identity: %s: larger than %d MiB", path, maxPEMSize>>20)
	}
	return data, nil
}

// load parses the files into an Identity; errors name the file at fault.
func (f *FileSource) load(p pemFiles) (*Identity, error) {
	chain, err := parseCertsPEM(p.cert)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", f.certFile, err)
	}
	key, _, err := parseKeyPEM(p.key)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", f.keyFile, err)
	}
	roots, err := parseCertsPEM(p.roots)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", f.rootsFile, err)
	}
	if !publicKeyEqual(key, chain[0].PublicKey) {
		return nil, fmt.Errorf("identity: the private key in %s does not match the certificate in %s", f.keyFile, f.certFile)
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	id, err := buildIdentity(cert, roots)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", f.certFile, err)
	}
	opts := x509.VerifyOptions{
		Roots:         id.Pool,
		Intermediates: x509.NewCertPool(),
		CurrentTime:   f.cfg.clock.Now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	for _, c := range chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := chain[0].Verify(opts); err != nil {
		f.cfg.logger.Warn("identity: the certificate does not chain to the trust roots; peers with the same roots will refuse it",
			"cert", f.certFile, "roots", f.rootsFile, "id", id.ID.String(), "error", err)
	}
	return id, nil
}

// run watches and re-reads the files until Close. last is the hash of the
// files as last read.
func (f *FileSource) run(w *dirwatch.Watcher, last [32]byte) {
	defer close(f.done)
	var lastErr string // last read error logged
	w.Run(f.stop, dirwatch.Reload{
		Debounce:    fileDebounce,
		MaxDebounce: fileMaxDebounce,
		Period:      f.period,
		Clock:       f.cfg.clock,
		Reload:      func() { f.reload(&last, &lastErr) },
		Log:         f.cfg.logger,
		What:        "certificate files",
	})
}

// reload reads the files and publishes a new identity when they changed and
// load; otherwise the last good identity stays, and the trouble is logged
// once per distinct content or read error.
func (f *FileSource) reload(last *[32]byte, lastErr *string) {
	raw, err := f.read()
	if err != nil {
		if msg := err.Error(); msg != *lastErr {
			*lastErr = msg
			f.cfg.logger.Warn("identity: cannot read the certificate files; keeping the last good identity",
				"error", err, "id", f.cur.Load().ID.String())
		}
		return
	}
	*lastErr = ""
	sum := raw.sum()
	if sum == *last {
		return
	}
	*last = sum
	id, err := f.load(raw)
	if err != nil {
		f.cfg.logger.Warn("identity: rejected new certificate files; keeping the last good identity",
			"error", err, "id", f.cur.Load().ID.String(), "serial", f.cur.Load().Serial())
		return
	}
	if sameIdentity(f.cur.Load(), id) {
		return
	}
	f.cur.Store(id)
	f.changed.notify()
	f.cfg.logger.Info("identity: loaded new certificate files",
		"id", id.ID.String(), "serial", id.Serial(), "not_after", id.NotAfter(), "roots", len(id.Roots))
}

// sameIdentity reports whether a and b hold the same chain and roots.
func sameIdentity(a, b *Identity) bool {
	if a == nil || b == nil {
		return a == b
	}
	eqDER := func(x, y []byte) bool { return string(x) == string(y) }
	if !slices.EqualFunc(a.Certificate.Certificate, b.Certificate.Certificate, eqDER) {
		return false
	}
	return slices.EqualFunc(a.Roots, b.Roots, (*x509.Certificate).Equal)
}

// period is how long to wait for the next re-read without an event: the
// refresh interval, or the polling period when fsnotify does not watch
// every directory (and is not turned off), whichever is shorter.
func (f *FileSource) period(watching bool) time.Duration {
	if f.cfg.noWatch || watching {
		return f.cfg.refresh
	}
	return min(f.cfg.refresh, filePoll)
}
