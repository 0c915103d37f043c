// Package clock is the source of time for every part of inmesh that waits or
// measures: retry budgets, backoff sleeps, outlier ejections and deadlines.
//
// Production code uses [System], the clock of package time. Tests inject the
// manually advanced fake of package clocktest, so time-dependent behaviour is
// tested fast and deterministically, without sleeping.
//
// A Clock is safe for concurrent use; it sits below every layer of the request
// flow and holds no state of its own (System) or only test state (the fake).
package clock
