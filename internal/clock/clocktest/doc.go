// Package clocktest provides [Fake], a manually advanced [clock.Clock] for
// tests of code that waits or measures time (budgets, backoff, ejections).
//
// A Fake is safe for concurrent use: the code under test may create and stop
// timers from its own goroutines while the test advances time. It is meant for
// tests only and never for production code.
package clocktest
