package resilience_test

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/inmesh/inmesh/resilience"
)

func ExampleParseRetryOn() {
	retryOn, err := resilience.ParseRetryOn([]string{"connect-failure", "gateway-error", "unavailable"})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, o := range []resilience.Outcome{
		{Err: resilience.ErrConnect},
		{HTTPStatus: http.StatusServiceUnavailable},
		{HTTPStatus: http.StatusInternalServerError},
		{GRPCCode: resilience.CodeUnavailable, IsGRPC: true},
	} {
		fmt.Printf("%+v retry=%v failure=%v\n", o, retryOn.Match(o), resilience.IsFailure(o))
	}

	_, err = resilience.ParseRetryOn([]string{"reset", "503", "503x"})
	fmt.Println(err)
	// Output:
	// {Err:connect HTTPStatus:0 GRPCCode:OK IsGRPC:false} retry=true failure=true
	// {Err:none HTTPStatus:503 GRPCCode:OK IsGRPC:false} retry=true failure=true
	// {Err:none HTTPStatus:500 GRPCCode:OK IsGRPC:false} retry=false failure=true
	// {Err:none HTTPStatus:0 GRPCCode:Unavailable IsGRPC:true} retry=true failure=true
	// retry_on[2]: unknown condition "503x"
}

func ExampleBudget() {
	// No reserve, so only deposits pay for retries: 20% of the calls.
	budget := resilience.NewBudget(resilience.BudgetConfig{Ratio: 0.2}, nil)
	calls, retries := 0, 0
	for range 10 {
		calls++
		budget.Deposit() // once per logical call
		for range 2 {    // up to two retries against a failing backend
			if !budget.TryWithdraw() {
				break // exhausted: return the failure instead of retrying
			}
			retries++
		}
	}
	fmt.Printf("%d calls, %d retries, balance %.1f\n", calls, retries, budget.Balance())

	// A floor of 10 retries per second is a reserve of 100 from the start.
	fmt.Println(resilience.NewBudget(resilience.BudgetConfig{Ratio: 0.2, MinPerSecond: 10}, nil).Balance())
	// Output:
	// 10 calls, 2 retries, balance 0.0
	// 100
}

func ExampleBreaker() {
	onChange := func(name, from, to string) { fmt.Printf("%s: %s -> %s\n", name, from, to) }
	breaker := resilience.NewBreaker("billing", resilience.BreakerConfig{
		ConsecutiveFailures: 2,
		OpenFor:             30 * time.Second,
		HalfOpenRequests:    1,
	}, onChange)

	for range 3 {
		done, err := breaker.Allow()
		if errors.Is(err, resilience.ErrBreakerOpen) {
			fmt.Println("rejected:", err)
			continue
		}
		done.Done(true) // the attempt failed, per IsFailure
	}
	fmt.Println(breaker.State())
	// Output:
	// billing: closed -> open
	// rejected: resilience: circuit breaker is open: billing
	// open
}

func ExampleOutlier() {
	outlier := resilience.NewOutlier(resilience.OutlierConfig{
		ConsecutiveFailures: 3,
		BaseEjection:        30 * time.Second,
		MaxEjectionPercent:  50,
	}, nil)
	outlier.SetPool([]string{"10.0.0.1:80", "10.0.0.2:80"})
	host := outlier.Host("10.0.0.1:80")

	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for range 3 {
		host.Report(true, now)
	}
	fmt.Println(host.Available(now), host.Available(now.Add(30*time.Second)))
	// Output: false true
}
