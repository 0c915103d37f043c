package policy

import (
	"context"
	"errors"
	"testing"
	"time"
)

// watch runs src.Watch in a goroutine and returns the events it emits and a
// stop function that cancels it and returns Watch's result.
func watch(t *testing.T, src Source) (events <-chan Event, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan Event, 100)
	done := make(chan error, 1)
	go func() { done <- src.Watch(ctx, func(ev Event) { ch <- ev }) }()
	var stopped bool
	var result error
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case result = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Watch did not return after its context ended")
			}
		}
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return ch, stop
}

// next waits for the next event, failing the test after a generous deadline
// (a liveness bound, not a timing assertion).
func next(t *testing.T, events <-chan Event) Event {
	t.Helper()
	select {
	case ev := <-events:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
		return Event{}
	}
}

func TestStaticSource(t *testing.T) {
	doc := mustParse(t, "services: {billing: {timeout: 2s}}")
	src := NewStaticSource(doc)
	if src.String() != "inline" {
		t.Errorf("String() = %q", src.String())
	}
	doc.Services["billing"].Timeout = Duration(time.Hour) // too late: the source copied it
	events, stop := watch(t, src)
	ev := next(t, events)
	if ev.Err != nil || ev.Snapshot == nil {
		t.Fatalf("event = %+v", ev)
	}
	if got := ev.Snapshot.Service("billing").Effective.Timeout; got != 2*time.Second {
		t.Errorf("timeout = %v", got)
	}
	if ev.Snapshot.Source != "inline" {
		t.Errorf("source = %q", ev.Snapshot.Source)
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Watch returned %v", err)
	}
	select {
	case ev := <-events:
		t.Errorf("second event %+v", ev)
	default:
	}
}

func TestStaticSourceInvalid(t *testing.T) {
	src := NewStaticSource(&Document{Services: map[string]*Service{"Bad": {}}})
	events, stop := watch(t, src)
	ev := next(t, events)
	if ev.Snapshot != nil || !errors.Is(ev.Err, ErrInvalid) {
		t.Fatalf("event = %+v", ev)
	}
	want := `inline: policy: services.Bad: invalid service name "Bad": use a-z, 0-9, ".", "_", "-", starting with a letter or digit, at most 253 characters`
	if ev.Err.Error() != want {
		t.Errorf("error %q, want %q", ev.Err, want)
	}
	var ve *ValidationError
	if !errors.As(ev.Err, &ve) {
		t.Error("errors.As(*ValidationError) failed")
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Watch returned %v", err)
	}
}

func TestStaticSourceCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := NewStaticSource(nil).Watch(ctx, func(ev Event) { t.Errorf("emitted %+v", ev) })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Watch = %v", err)
	}
}
