package identity

import (
	"log/slog"
	"time"

	"github.com/inmesh/inmesh/internal/clock"
)

// Defaults of the dev CA and the file source.
const (
	// DefaultLeafTTL is the lifetime of the dev CA's leaf certificates.
	DefaultLeafTTL = 24 * time.Hour
	// DefaultRefreshInterval is how often a FileSource re-reads its files
	// even without a file system event.
	DefaultRefreshInterval = 30 * time.Second

	rootTTL = 10 * 365 * 24 * time.Hour // dev CA roots: ten years
)

// CAOption configures [NewDevCA] and [LoadOrCreateDevCA].
type CAOption interface{ applyCA(*caConfig) }

// FileOption configures [NewFileSource].
type FileOption interface{ applyFile(*fileConfig) }

// Option is an option accepted both as a [CAOption] and as a [FileOption].
type Option interface {
	CAOption
	FileOption
}

// caConfig holds the settings of a DevCA; newCAConfig sets every default.
type caConfig struct {
	clock   clock.Clock
	leafTTL time.Duration
	logger  *slog.Logger
}

func newCAConfig(opts []CAOption) caConfig {
	c := caConfig{clock: clock.System{}, leafTTL: DefaultLeafTTL}
	for _, o := range opts {
		if o != nil {
			o.applyCA(&c)
		}
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	return c
}

// fileConfig holds the settings of a FileSource; newFileConfig sets every
// default.
type fileConfig struct {
	clock   clock.Clock
	refresh time.Duration
	logger  *slog.Logger
	noWatch bool // tests: rely on the periodic re-read only
}

func newFileConfig(opts []FileOption) fileConfig {
	c := fileConfig{clock: clock.System{}, refresh: DefaultRefreshInterval}
	for _, o := range opts {
		if o != nil {
			o.applyFile(&c)
		}
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	return c
}

// clockOption sets the clock.
type clockOption struct{ c clock.Clock }

// WithClock sets the clock the dev CA issues and renews by, and the clock a
// FileSource checks expiry and schedules its periodic re-read by. nil means
// the system clock (the default).
func WithClock(c clock.Clock) Option { return clockOption{c} }

func (o clockOption) applyCA(c *caConfig) {
	if o.c != nil {
		c.clock = o.c
	}
}

func (o clockOption) applyFile(c *fileConfig) {
	if o.c != nil {
		c.clock = o.c
	}
}

// loggerOption sets the logger.
type loggerOption struct{ l *slog.Logger }

// WithLogger sets where the dev CA (renewals, at debug level) and the file
// source (reloads, and rejected files at warning level) log. nil means
// slog.Default() (the default).
func WithLogger(l *slog.Logger) Option { return loggerOption{l} }

func (o loggerOption) applyCA(c *caConfig)     { c.logger = o.l }
func (o loggerOption) applyFile(c *fileConfig) { c.logger = o.l }

// leafTTLOption sets the leaf lifetime.
type leafTTLOption time.Duration

// WithLeafTTL sets the lifetime of the leaf certificates the dev CA's
// sources issue (default [DefaultLeafTTL], 24h). A leaf is renewed at a
// random point between 60% and 90% of its lifetime. d <= 0 means the default.
func WithLeafTTL(d time.Duration) CAOption { return leafTTLOption(d) }

func (o leafTTLOption) applyCA(c *caConfig) {
	if o > 0 {
		c.leafTTL = time.Duration(o)
	}
}

// refreshOption sets the periodic re-read interval.
type refreshOption time.Duration

// WithRefreshInterval sets how often a FileSource re-reads its files even
// when no file system event arrived (default [DefaultRefreshInterval], 30s);
// it backs up fsnotify, which misses changes on some file systems. d <= 0
// means the default.
func WithRefreshInterval(d time.Duration) FileOption { return refreshOption(d) }

func (o refreshOption) applyFile(c *fileConfig) {
	if o > 0 {
		c.refresh = time.Duration(o)
	}
}

// noWatchOption turns fsnotify off, so tests can check the periodic re-read
// alone.
type noWatchOption struct{}

func (noWatchOption) applyFile(c *fileConfig) { c.noWatch = true }
