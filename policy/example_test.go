package policy_test

import (
	"fmt"

	"github.com/inmesh/inmesh/policy"
)

func ExampleParse() {
	doc, err := policy.Parse([]byte(`
defaults:
  timeout: 5s
  retry: {attempts: 2}
services:
  billing:
    timeout: 2s
    routes:
      - name: charge
        match: {path_prefix: /charge, methods: [post]}
        timeout: 1s
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	snap, err := policy.NewSnapshot(doc, "inline")
	if err != nil {
		fmt.Println(err)
		return
	}
	billing := snap.Service("billing")
	fmt.Println("service timeout:", billing.Effective.Timeout)
	fmt.Println("attempts:", billing.Effective.Attempts, "retry on:", billing.Effective.RetryOn)
	charge := billing.Routes[0]
	fmt.Println("route", charge.Name, charge.Match.Methods, "timeout:", charge.Effective.Timeout)

	_, err = policy.Parse([]byte(`
services:
  billing:
    retry: {attempts: 11}
`))
	fmt.Println(err)
	// Output:
	// service timeout: 2s
	// attempts: 2 retry on: [connect-failure reset 502 503 504 unavailable]
	// route charge [POST] timeout: 1s
	// policy: services.billing.retry.attempts: must be 1..10
}

func ExampleNewFileSource() {
	src := policy.NewFileSource("/etc/inmesh/mesh.yaml", nil)
	fmt.Println(src)
	// Output: file:/etc/inmesh/mesh.yaml
}
