package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// ---- the meshes' logs, readable: one line each, a prefix per workload ----

// logSink writes the records of every mesh of the demo to w, one short line
// each: the time since the start, "[workload]", the level, the message and
// its attributes. Warn and above go through, and the policy updates logged
// at Info but for a fixed policy's at start; a line about a destination
// repeated (same message, destination and transition) more than logRepeats
// times, or another line repeated at all (the dev CA's warning of every
// workload), is counted, not written.
type logSink struct {
	mu         sync.Mutex
	w          io.Writer
	start      time.Time
	seen       map[string]int
	suppressed int
}

const logRepeats = 3

func newLogSink(w io.Writer) *logSink {
	return &logSink{w: w, start: time.Now(), seen: map[string]int{}}
}

func (s *logSink) logger() *slog.Logger { return slog.New(&logHandler{sink: s}) }

// say writes a line of the demo's own among the meshes'.
func (s *logSink) say(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.w, "%6.2fs [demo] "+format+"\n", append([]any{time.Since(s.start).Seconds()}, args...)...)
}

// done writes how many lines were left out.
func (s *logSink) done() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.suppressed > 0 {
		fmt.Fprintf(s.w, "%6.2fs [demo] %d repeated mesh log lines left out\n", time.Since(s.start).Seconds(), s.suppressed)
	}
}

type logHandler struct {
	sink     *logSink
	workload string
	attrs    []slog.Attr
	group    string
}

func (h *logHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		switch {
		case h.group == "" && a.Key == "workload":
			c.workload = a.Value.String() // the prefix says it
		case h.group == "" && a.Key == "component":
			// every line is the mesh's
		default:
			if h.group != "" {
				a.Key = h.group + "." + a.Key
			}
			c.attrs = append(c.attrs, a)
		}
	}
	return &c
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	c := *h
	if c.group != "" {
		name = c.group + "." + name
	}
	c.group = name
	return &c
}

func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn && !strings.HasPrefix(r.Message, "policy ") {
		return nil
	}
	key, repeats := r.Message, 1
	inline := false
	visit := func(a slog.Attr) {
		switch a.Key {
		case "service", "from", "to", "layer", "endpoint", "version":
			key += "|" + a.Value.String()
			repeats = logRepeats
		case "source":
			inline = a.Value.String() == "inline"
		}
	}
	for _, a := range h.attrs {
		visit(a)
	}
	r.Attrs(func(a slog.Attr) bool { visit(a); return true })
	if r.Level < slog.LevelWarn && inline {
		return nil // a fixed policy applied at start: nothing happened
	}

	s := h.sink
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen[key]++
	if s.seen[key] > repeats {
		s.suppressed++
		return nil
	}
	// Formatted only when written: a flood costs a count, not a line.
	var b strings.Builder
	for _, a := range h.attrs { // their group is in their key already
		fmt.Fprintf(&b, " %s=%s", a.Key, quote(a.Value.String()))
	}
	r.Attrs(func(a slog.Attr) bool {
		if h.group != "" {
			a.Key = h.group + "." + a.Key
		}
		fmt.Fprintf(&b, " %s=%s", a.Key, quote(a.Value.String()))
		return true
	})
	workload := h.workload
	if workload == "" {
		workload = "mesh"
	}
	_, err := fmt.Fprintf(s.w, "%6.2fs [%s] %s %s%s\n", time.Since(s.start).Seconds(), workload, r.Level, r.Message, b.String())
	return err
}

func quote(v string) string {
	if v == "" || strings.ContainsAny(v, " \t\n\"=") {
		return fmt.Sprintf("%q", v)
	}
	return v
}
