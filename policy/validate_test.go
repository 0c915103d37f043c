package policy

import (
	"fmt"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // exactly these problems, in this order; nil: valid
	}{
		// Document.
		{"minimal", "services: {billing: {}}", nil},
		{"no services", "version: x", nil},
		{"version control char", "version: \"a\\tb\"", []string{"version: must be at most 256 characters, without control characters"}},
		{"version too long", "version: " + strings.Repeat("v", 257), []string{"version: must be at most 256 characters, without control characters"}},
		{"trust domain", "trust_domain: mesh.local", nil},
		{"trust domain upper", "trust_domain: Mesh.local", []string{`trust_domain: invalid trust domain "Mesh.local": must be a lower-case DNS name such as "mesh.local"`}},
		{"trust domain empty label", "trust_domain: mesh..local", []string{`trust_domain: invalid trust domain "mesh..local": must be a lower-case DNS name such as "mesh.local"`}},
		{"trust domain dash", "trust_domain: -mesh", []string{`trust_domain: invalid trust domain "-mesh": must be a lower-case DNS name such as "mesh.local"`}},

		{"egress allow", "egress: allow", nil},
		{"egress deny", "egress: deny\nservices: {billing: {}}", nil},
		{"egress other", "egress: block", []string{`egress: must be allow or deny, not "block"`}},
		{"egress upper", "egress: Deny", []string{`egress: must be allow or deny, not "Deny"`}},

		// Service names.
		{"service name trailing dot", `services: {"billing.": {}}`, []string{`services["billing."]: invalid service name "billing.": write it without the trailing dot ("billing"), which names the same host`}},
		{"service name ok", "services: {billing-v2.prod_1: {}, 9lives: {}}", nil},
		{"service name upper", "services: {Billing: {}}", []string{`services.Billing: invalid service name "Billing": use a-z, 0-9, ".", "_", "-", starting with a letter or digit, at most 253 characters`}},
		{"service name start", "services: {-billing: {}}", []string{`services.-billing: invalid service name "-billing": use a-z, 0-9, ".", "_", "-", starting with a letter or digit, at most 253 characters`}},
		{"service name empty", `services: {"": {}}`, []string{`services[""]: invalid service name "": use a-z, 0-9, ".", "_", "-", starting with a letter or digit, at most 253 characters`}},
		{"service name space", `services: {"bill ing": {}}`, []string{`services["bill ing"]: invalid service name "bill ing": use a-z, 0-9, ".", "_", "-", starting with a letter or digit, at most 253 characters`}},
		{"service name too long", "services: {" + strings.Repeat("a", 254) + ": {}}", []string{"services." + strings.Repeat("a", 254) + `: invalid service name "` + strings.Repeat("a", 254) + `": use a-z, 0-9, ".", "_", "-", starting with a letter or digit, at most 253 characters`}},

		// Endpoints.
		{"endpoints ok", "services: {b: {endpoints: [{address: 127.0.0.1:1}, {address: '[::1]:65535'}, {address: db.internal:5432}]}}", nil},
		{"endpoint no port", "services: {b: {endpoints: [{address: 127.0.0.1}]}}", []string{`services.b.endpoints[0].address: invalid address "127.0.0.1": want host:port`}},
		{"endpoint empty", "services: {b: {endpoints: [{labels: {a: b}}]}}", []string{`services.b.endpoints[0].address: invalid address "": want host:port`}},
		{"endpoint port 0", "services: {b: {endpoints: [{address: 'h:0'}]}}", []string{`services.b.endpoints[0].address: invalid address "h:0": port must be 1..65535`}},
		{"endpoint port big", "services: {b: {endpoints: [{address: 'h:65536'}]}}", []string{`services.b.endpoints[0].address: invalid address "h:65536": port must be 1..65535`}},
		{"endpoint port name", "services: {b: {endpoints: [{address: 'h:http'}]}}", []string{`services.b.endpoints[0].address: invalid address "h:http": port must be 1..65535`}},
		{"endpoint port sign", "services: {b: {endpoints: [{address: 'h:+80'}]}}", []string{`services.b.endpoints[0].address: invalid address "h:+80": port must be 1..65535`}},
		{"endpoint no host", "services: {b: {endpoints: [{address: ':80'}]}}", []string{`services.b.endpoints[0].address: invalid address ":80": no host`}},
		{"endpoint bad host", "services: {b: {endpoints: [{address: 'a/b:80'}]}}", []string{`services.b.endpoints[0].address: invalid address "a/b:80": bad host "a/b"`}},
		{"endpoint duplicate", "services: {b: {endpoints: [{address: 'h:80'}, {address: 'h:81'}, {address: 'h:80'}]}}", []string{`services.b.endpoints[2].address: duplicate address "h:80" (also endpoints[0])`}},
		{"endpoint label name", `services: {b: {endpoints: [{address: 'h:80', labels: {"": x}}]}}`, []string{`services.b.endpoints[0].labels[""]: a label needs a name`}},

		// Durations.
		{"negative timeout", "services: {b: {timeout: -1s}}", []string{"services.b.timeout: must be > 0, got -1s"}},
		{"negative per try", "services: {b: {retry: {per_try_timeout: -5ms}}}", []string{"services.b.retry.per_try_timeout: must be > 0, got -5ms"}},
		{"negative backoff", "services: {b: {retry: {backoff: {initial: -1ms}}}}", []string{"services.b.retry.backoff.initial: must be > 0, got -1ms"}},
		{"negative open_for", "services: {b: {circuit_breaker: {open_for: -1s}}}", []string{"services.b.circuit_breaker.open_for: must be > 0, got -1s"}},
		{"negative base_ejection", "services: {b: {outlier_detection: {base_ejection: -1s}}}", []string{"services.b.outlier_detection.base_ejection: must be > 0, got -1s"}},
		{"durations at their bounds", "services: {b: {timeout: 8760h, retry: {per_try_timeout: 8760h, backoff: {initial: 1h, max: 1h}}, circuit_breaker: {open_for: 8760h}, outlier_detection: {base_ejection: 8760h}}}", nil},
		{"durations past their bounds", "services: {b: {timeout: 8761h, retry: {per_try_timeout: 8760h1ns, backoff: {initial: 61m, max: 2h}}, circuit_breaker: {open_for: 100000h}, outlier_detection: {base_ejection: 2562047h}}}", []string{
			"services.b.timeout: must be at most 8760h, got 8761h0m0s",
			"services.b.retry.per_try_timeout: must be at most 8760h, got 8760h0m0.000000001s",
			"services.b.retry.backoff.initial: must be at most 1h, got 1h1m0s",
			"services.b.retry.backoff.max: must be at most 1h, got 2h0m0s",
			"services.b.circuit_breaker.open_for: must be at most 8760h, got 100000h0m0s",
			"services.b.outlier_detection.base_ejection: must be at most 8760h, got 2562047h0m0s",
		}},
		{"duration bound in a route", "services: {b: {routes: [{timeout: 9000h}]}}", []string{"services.b.routes[0].timeout: must be at most 8760h, got 9000h0m0s"}},
		{"backoff max below initial", "services: {b: {retry: {backoff: {initial: 1s, max: 100ms}}}}", []string{"services.b.retry.backoff.max: must be >= initial (1s), got 100ms"}},
		{"backoff initial alone above default max", "services: {b: {retry: {backoff: {initial: 1s}}}}", nil},
		{"backoff merged", "defaults: {retry: {backoff: {initial: 1s}}}\nservices: {b: {retry: {backoff: {max: 100ms}}}}", []string{"services.b.retry.backoff.max: must be >= initial (1s), got 100ms"}},
		{"backoff in defaults", "defaults: {retry: {backoff: {initial: 1s, max: 100ms}}}\nservices: {b: {}}", []string{"defaults.retry.backoff.max: must be >= initial (1s), got 100ms"}},
		{"backoff in route", "services: {b: {retry: {backoff: {initial: 1s}}, routes: [{retry: {backoff: {max: 10ms}}}]}}", []string{"services.b.routes[0].retry.backoff.max: must be >= initial (1s), got 10ms"}},
		{"backoff in defaults route for a service", "defaults: {routes: [{retry: {backoff: {max: 10ms}}}]}\nservices: {b: {retry: {backoff: {initial: 1s}}}}", []string{
			"defaults.routes[0].retry.backoff.max: must be >= initial (25ms), got 10ms",
			"defaults.routes[0].retry.backoff.max: must be >= initial (1s), got 10ms for service b",
		}},
		{"backoff in defaults route, fine alone", "defaults: {routes: [{retry: {backoff: {max: 100ms}}}]}\nservices: {a: {}, b: {retry: {backoff: {initial: 1s}}}}", []string{
			"defaults.routes[0].retry.backoff.max: must be >= initial (1s), got 100ms for service b",
		}},

		// Retry.
		{"attempts 10", "services: {b: {retry: {attempts: 10}}}", nil},
		{"attempts 11", "services: {b: {retry: {attempts: 11}}}", []string{"services.b.retry.attempts: must be 1..10"}},
		{"attempts negative", "services: {b: {retry: {attempts: -1}}}", []string{"services.b.retry.attempts: must be 1..10"}},
		{"attempts in route", "services: {b: {routes: [{retry: {attempts: 20}}]}}", []string{"services.b.routes[0].retry.attempts: must be 1..10"}},
		{"attempts in defaults", "defaults: {retry: {attempts: 0x10}}", []string{"defaults.retry.attempts: must be 1..10"}},
		{"attempts 0", "services: {b: {retry: {attempts: 0}}}", []string{"services.b.retry.attempts: must be 1..10"}},
		{"attempts 0 in route", "services: {b: {routes: [{retry: {attempts: 0x0}}]}}", []string{"services.b.routes[0].retry.attempts: must be 1..10"}},
		{"attempts 0 in JSON", `{"defaults": {"retry": {"attempts": 0}}}`, []string{"defaults.retry.attempts: must be 1..10"}},
		{"attempts 0 through an alias", "defaults: {retry: &r {attempts: 0}}\nservices: {b: {retry: *r}}", []string{"defaults.retry.attempts: must be 1..10", "services.b.retry.attempts: must be 1..10"}},
		{"attempts null is unset", "services: {b: {retry: {attempts: null}}}", nil},
		{"retry_on ok", "services: {b: {retry: {retry_on: [5xx, gateway-error, retriable-4xx, 429, per-try-timeout, resource-exhausted]}}}", nil},
		{"retry_on unknown", "services: {b: {retry: {retry_on: [reset, 503x, 503, bogus]}}}", []string{
			`services.b.retry.retry_on[1]: unknown condition "503x"`,
			`services.b.retry.retry_on[3]: unknown condition "bogus"`,
		}},
		{"budget ok", "services: {b: {retry: {budget: {ratio: 0, min_per_second: 0}}}}", nil},
		{"budget ratio", "services: {b: {retry: {budget: {ratio: 1.5}}}}", []string{"services.b.retry.budget.ratio: must be 0..1"}},
		{"budget ratio negative", "services: {b: {retry: {budget: {ratio: -0.1}}}}", []string{"services.b.retry.budget.ratio: must be 0..1"}},
		{"budget min", "services: {b: {retry: {budget: {min_per_second: 10001}}}}", []string{"services.b.retry.budget.min_per_second: must be 0..10000"}},
		{"budget min negative", "services: {b: {retry: {budget: {min_per_second: -1}}}}", []string{"services.b.retry.budget.min_per_second: must be 0..10000"}},

		// Circuit breaker and outlier detection.
		{"breaker empty block", "services: {b: {circuit_breaker: {}}}", nil},
		{"breaker failures", "services: {b: {circuit_breaker: {consecutive_failures: -1}}}", []string{"services.b.circuit_breaker.consecutive_failures: must be >= 1"}},
		{"breaker half open", "services: {b: {circuit_breaker: {half_open_requests: 1001}}}", []string{"services.b.circuit_breaker.half_open_requests: must be 1..1000"}},
		{"breaker failures 0", "services: {b: {circuit_breaker: {consecutive_failures: 0}}}", []string{"services.b.circuit_breaker.consecutive_failures: must be >= 1"}},
		{"breaker half open 0", "services: {b: {circuit_breaker: {half_open_requests: 0}}}", []string{"services.b.circuit_breaker.half_open_requests: must be 1..1000"}},
		{"outlier failures 0", "services: {b: {outlier_detection: {consecutive_failures: 0}}}", []string{"services.b.outlier_detection.consecutive_failures: must be >= 1"}},
		{"breaker half open negative", "services: {b: {circuit_breaker: {half_open_requests: -2}}}", []string{"services.b.circuit_breaker.half_open_requests: must be 1..1000"}},
		{"outlier failures", "services: {b: {outlier_detection: {consecutive_failures: -3}}}", []string{"services.b.outlier_detection.consecutive_failures: must be >= 1"}},
		{"outlier percent", "services: {b: {outlier_detection: {max_ejection_percent: 101}}}", []string{"services.b.outlier_detection.max_ejection_percent: must be 0..100"}},
		{"outlier percent negative", "services: {b: {outlier_detection: {max_ejection_percent: -1}}}", []string{"services.b.outlier_detection.max_ejection_percent: must be 0..100"}},

		// Enumerations.
		{"load balancers", "services: {a: {load_balancer: round_robin}, b: {load_balancer: least_request}, c: {load_balancer: random}}", nil},
		{"load balancer", "services: {b: {load_balancer: fastest}}", []string{`services.b.load_balancer: must be one of round_robin, least_request, random, ring_hash, maglev; got "fastest"`}},
		{"tls", "services: {b: {tls: permissive}}", []string{`services.b.tls: must be one of strict, disable; got "permissive"`}},
		{"tls in route", "services: {b: {routes: [{tls: STRICT}]}}", []string{`services.b.routes[0].tls: must be one of strict, disable; got "STRICT"`}},

		// Authorization.
		{"authz ok", "services: {b: {authorization: {default: allow, rules: [{from: ['*']}, {from: [a], paths: [/x], methods: [get, POST]}]}}}", nil},
		{"authz default", "services: {b: {authorization: {default: reject}}}", []string{`services.b.authorization.default: must be one of deny, allow; got "reject"`}},
		{"authz no from", "services: {b: {authorization: {rules: [{paths: [/x]}]}}}", []string{`services.b.authorization.rules[0].from: must name at least one calling service (or "*" for any)`}},
		{"authz bad from", "services: {b: {authorization: {rules: [{from: [a, Admin, '']}]}}}", []string{
			`services.b.authorization.rules[0].from[1]: invalid service name "Admin"`,
			`services.b.authorization.rules[0].from[2]: invalid service name ""`,
		}},
		{"authz path", "services: {b: {authorization: {rules: [{from: [a], paths: [/ok, charge]}]}}}", []string{`services.b.authorization.rules[0].paths[1]: must start with "/"`}},
		{"authz method", "services: {b: {authorization: {rules: [{from: [a], methods: ['GET POST']}]}}}", []string{`services.b.authorization.rules[0].methods[0]: invalid method "GET POST"`}},

		// Routes.
		{"route names unique", "services: {b: {routes: [{name: a}, {name: b}, {name: a}]}}", []string{`services.b.routes[2].name: duplicate route name "a" (also routes[0])`}},
		{"unnamed routes", "services: {b: {routes: [{}, {}]}}", nil},
		{"route name clash with generated", "services: {b: {routes: [{}, {name: 'route[0]'}]}}", []string{`services.b.routes[1].name: duplicate route name "route[0]" (also routes[0])`}},
		{"path prefix", "services: {b: {routes: [{match: {path_prefix: charge}}]}}", []string{`services.b.routes[0].match.path_prefix: must start with "/"`}},
		{"header name empty", `services: {b: {routes: [{match: {headers: {"": x}}}]}}`, []string{`services.b.routes[0].match.headers[""]: a header needs a name`}},
		{"header name bad", `services: {b: {routes: [{match: {headers: {"x canary": x}}}]}}`, []string{`services.b.routes[0].match.headers["x canary"]: invalid header name "x canary"`}},
		{"header twice", `services: {b: {routes: [{match: {headers: {X-Canary: a, x-canary: b}}}]}}`, []string{`services.b.routes[0].match.headers.x-canary: header "x-canary" given twice (names are case-insensitive; also "X-Canary")`}},
		{"methods", "services: {b: {routes: [{match: {methods: [get, POST, 'PO ST', '']}}]}}", []string{
			`services.b.routes[0].match.methods[2]: invalid method "PO ST"`,
			`services.b.routes[0].match.methods[3]: invalid method ""`,
		}},

		// Splits.
		{"split ok", "services: {b: {subsets: {v1: {}, v2: {}}, routes: [{split: [{subset: v1, weight: 0}, {subset: v2, weight: 1}]}]}}", nil},
		{"split negative", "services: {b: {subsets: {v1: {}, v2: {}}, routes: [{split: [{subset: v1, weight: -1}, {subset: v2, weight: 1}]}]}}", []string{"services.b.routes[0].split[0].weight: must be >= 0"}},
		{"split huge", "services: {b: {subsets: {v1: {}}, routes: [{split: [{subset: v1, weight: 1000001}]}]}}", []string{
			"services.b.routes[0].split[0].weight: must be at most 1000000",
			"services.b.routes[0].split: the weights must add up to more than 0",
		}},
		{"split zero sum", "services: {b: {subsets: {v1: {}, v2: {}}, routes: [{split: [{subset: v1, weight: 0}, {subset: v2, weight: 0}]}]}}", []string{"services.b.routes[0].split: the weights must add up to more than 0"}},
		{"split unknown subset", "services: {b: {subsets: {v1: {}}, routes: [{name: x}, {split: [{subset: v1, weight: 1}, {subset: v3, weight: 1}]}]}}", []string{`services.b.routes[1].split[1].subset: unknown subset "v3"`}},
		// An entry without a subset (nor a service) is every endpoint of the route's service.
		{"split no subset", "services: {b: {routes: [{split: [{weight: 1}]}]}}", nil},
		{"split no subset twice", "services: {b: {routes: [{split: [{weight: 1}, {weight: 1}]}]}}", []string{`services.b.routes[0].split[1].subset: subset "" appears twice in the split (also split[0])`}},

		// Splits to other services, failover.
		{"split to another service", "services: {a: {}, b: {routes: [{split: [{service: a, weight: 1}, {weight: 1}]}]}}", nil},
		{"split to another service's subset", "services: {a: {subsets: {v2: {version: v2}}}, b: {routes: [{split: [{service: a, subset: v2, weight: 1}]}]}}", nil},
		{"split to an unknown service", "services: {b: {routes: [{split: [{service: nope, weight: 1}]}]}}", []string{`services.b.routes[0].split[0].service: unknown service "nope": a split or failover may call a service of the document only`}},
		{"split service name", "services: {b: {routes: [{split: [{service: 'No Pe', weight: 1}]}]}}", []string{
			`services.b.routes[0].split[0].service: invalid service name "No Pe"`,
			`services.b.routes[0].split[0].service: unknown service "No Pe": a split or failover may call a service of the document only`,
		}},
		{"split to an unknown subset of another service", "services: {a: {subsets: {v1: {}}}, b: {subsets: {v2: {}}, routes: [{split: [{service: a, subset: v2, weight: 1}]}]}}", []string{`services.b.routes[0].split[0].subset: unknown subset "v2" of service a`}},
		{"split to another service's empty subset", "services: {a: {endpoints: [{address: 'h:1', labels: {version: v1}}], subsets: {v1: {version: v1}}}, b: {routes: [{split: [{service: a, subset: v1, weight: 1}]}]}}", nil},
		{"split to another service's subset over the defaults", "defaults: {subsets: {v3: {version: v3}}}\nservices: {a: {endpoints: [{address: 'h:1', labels: {version: v1}}]}, b: {routes: [{split: [{service: a, subset: v3, weight: 1}]}]}}", []string{
			`services.b.routes[0].split[0].subset: subset "v3" of service a selects none of its 1 endpoint`,
		}},
		{"split target twice", "services: {a: {}, b: {routes: [{split: [{service: a, weight: 1}, {service: a, weight: 2}]}]}}", []string{`services.b.routes[0].split[1]: target service a appears twice in the split (also split[0])`}},
		{"split own service by name", "services: {b: {subsets: {v1: {}}, routes: [{split: [{service: b, subset: v1, weight: 1}]}]}}", nil},
		{"failover ok", "services: {a: {subsets: {v1: {}}}, b: {subsets: {v1: {}, v2: {}}, routes: [{split: [{subset: v1, weight: 1, failover: [{subset: v2}, {service: a, subset: v1}, {service: a}]}]}]}}", nil},
		{"failover unknown subset", "services: {b: {subsets: {v1: {}}, routes: [{split: [{subset: v1, weight: 1, failover: [{subset: v9}]}]}]}}", []string{`services.b.routes[0].split[0].failover[0].subset: unknown subset "v9"`}},
		{"failover unknown service", "services: {b: {subsets: {v1: {}}, routes: [{split: [{subset: v1, weight: 1, failover: [{service: z}]}]}]}}", []string{`services.b.routes[0].split[0].failover[0].service: unknown service "z": a split or failover may call a service of the document only`}},
		{"failover to itself", "services: {b: {subsets: {v1: {}}, routes: [{split: [{subset: v1, weight: 1, failover: [{subset: v1}]}]}]}}", []string{`services.b.routes[0].split[0].failover[0]: is the entry's own target subset v1`}},
		{"failover twice", "services: {b: {subsets: {v1: {}, v2: {}}, routes: [{split: [{subset: v1, weight: 1, failover: [{subset: v2}, {subset: v2}]}]}]}}", []string{`services.b.routes[0].split[0].failover[1]: target subset v2 appears twice (also failover[0])`}},
		{"failover too long", "services: {b: {subsets: {v0: {}, v1: {}, v2: {}, v3: {}, v4: {}, v5: {}, v6: {}, v7: {}, v8: {}, v9: {}}, routes: [{split: [{subset: v0, weight: 1, failover: [{subset: v1}, {subset: v2}, {subset: v3}, {subset: v4}, {subset: v5}, {subset: v6}, {subset: v7}, {subset: v8}, {subset: v9}]}]}]}}", []string{
			`services.b.routes[0].split[0].failover: at most 8 targets, got 9`,
		}},
		{"connect_timeout ok", "services: {b: {connect_timeout: 1ms, routes: [{connect_timeout: 1h}]}}", nil},
		{"connect_timeout bounds", "defaults: {connect_timeout: 500us}\nservices: {b: {connect_timeout: 2h}}", []string{
			"defaults.connect_timeout: must be 1ms..1h, got 500µs",
			"services.b.connect_timeout: must be 1ms..1h, got 2h0m0s",
		}},
		{"split subset twice", "services: {b: {subsets: {v1: {}}, routes: [{split: [{subset: v1, weight: 1}, {subset: v1, weight: 1}]}]}}", []string{`services.b.routes[0].split[1].subset: subset "v1" appears twice in the split (also split[0])`}},
		{"subset selects no endpoint", "services: {billing: {endpoints: [{address: 'h:1', labels: {version: v1}}, {address: 'h:2', labels: {version: v2}}], subsets: {v1: {version: v1}, v3: {version: v3}, all: {}}}}", []string{
			"services.billing.subsets.v3: selects none of the 2 endpoints",
		}},
		{"subset needs every label", "services: {b: {endpoints: [{address: 'h:1', labels: {version: v1}}], subsets: {x: {version: v1, zone: a}}}}", []string{
			"services.b.subsets.x: selects none of the 1 endpoint",
		}},
		{"subset over the defaults' endpoints", "defaults: {endpoints: [{address: 'h:1'}]}\nservices: {b: {subsets: {v1: {version: v1}}}}", []string{
			"services.b.subsets.v1: selects none of the 1 endpoint",
		}},
		{"subset without static endpoints", "services: {b: {subsets: {v3: {version: v3}}, routes: [{split: [{subset: v3, weight: 1}]}]}}", nil},
		{"defaults subset unused by the service", "defaults: {subsets: {v2: {version: v2}}}\nservices: {b: {endpoints: [{address: 'h:1', labels: {version: v1}}]}}", nil},
		{"defaults subset split to by the service", "defaults: {subsets: {v2: {version: v2}}}\nservices: {b: {endpoints: [{address: 'h:1', labels: {version: v1}}], routes: [{split: [{subset: v2, weight: 0}, {subset: v1, weight: 1}]}], subsets: {v1: {version: v1}}}}", []string{
			"defaults.subsets.v2: selects none of the 1 endpoint of service b",
		}},
		{"subset name", `services: {b: {subsets: {"": {a: b}}}}`, []string{`services.b.subsets[""]: a subset needs a name`}},
		{"subset label name", `services: {b: {subsets: {v1: {"": b}}}}`, []string{`services.b.subsets.v1[""]: a label needs a name`}},

		// Merged view.
		{"subset from defaults", "defaults: {subsets: {v2: {version: v2}}}\nservices: {b: {routes: [{split: [{subset: v2, weight: 1}]}]}}", nil},
		{"defaults route checked per service", "defaults: {routes: [{split: [{subset: v2, weight: 1}]}]}\nservices:\n  a: {subsets: {v2: {}}}\n  b: {subsets: {v1: {}}}\n  c: {routes: [{name: own}]}\n", []string{
			`defaults.routes[0].split[0].subset: unknown subset "v2" for service b`,
		}},
		{"defaults routes without services", "defaults: {routes: [{split: [{subset: v2, weight: 1}]}]}", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantProblems(t, tt.in, tt.want)
		})
	}
}

func TestValidateDocumentInCode(t *testing.T) {
	var nilDoc *Document
	wantProblem(t, nilDoc.Validate(), "no document")

	two := 20
	doc := &Document{Services: map[string]*Service{
		"billing": {Settings: Settings{Retry: &Retry{Attempts: two}}},
		"empty":   nil, // a nil service is an empty one
	}}
	err := doc.Validate()
	wantProblem(t, err, "services.billing.retry.attempts: must be 1..10")
	if got := problemsOf(t, err); len(got) != 1 {
		t.Errorf("problems = %q", got)
	}
	if _, err := NewSnapshot(doc, "test"); err == nil {
		t.Error("NewSnapshot accepted an invalid document")
	}
}

func TestIsServiceName(t *testing.T) {
	for name, want := range map[string]bool{
		"billing": true, "b": true, "0": true, "a.b-c_d": true,
		"": false, "B": false, ".a": false, "_a": false, "a b": false, "a/b": false, "a:1": false,
		"billing.": false, "a.b.": false, // the canonical form has no trailing dot
		strings.Repeat("a", 253): true, strings.Repeat("a", 254): false,
	} {
		if got := IsServiceName(name); got != want {
			t.Errorf("IsServiceName(%q) = %v", name, got)
		}
	}
}

// Lists and mappings longer than smallMapping find their duplicates with a
// map rather than by comparing items: the problems are the same.
func TestValidateLongLists(t *testing.T) {
	list := func(n int, item func(i int) string) string {
		items := make([]string, n)
		for i := range items {
			items[i] = item(i)
		}
		return "[" + strings.Join(items, ", ") + "]"
	}
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"endpoints", "services: {b: {endpoints: " + list(20, func(i int) string { return fmt.Sprintf("{address: 'h%d:80'}", i%19) }) + "}}",
			[]string{`services.b.endpoints[19].address: duplicate address "h0:80" (also endpoints[0])`}},
		{"endpoints, short", "services: {b: {endpoints: " + list(5, func(i int) string { return fmt.Sprintf("{address: 'h%d:80'}", i%4) }) + "}}",
			[]string{`services.b.endpoints[4].address: duplicate address "h0:80" (also endpoints[0])`}},
		{"named routes", "services: {b: {routes: " + list(20, func(i int) string { return fmt.Sprintf("{name: r%d}", i%18) }) + "}}",
			[]string{`services.b.routes[18].name: duplicate route name "r0" (also routes[0])`, `services.b.routes[19].name: duplicate route name "r1" (also routes[1])`}},
		{"unnamed routes", "services: {b: {routes: " + list(20, func(i int) string {
			if i == 19 {
				return "{name: 'route[2]'}"
			}
			return "{}"
		}) + "}}",
			[]string{`services.b.routes[19].name: duplicate route name "route[2]" (also routes[2])`}},
		{"unnamed route after a named one", "services: {b: {routes: [{name: 'route[1]'}, {}, {name: 'route[]'}, {name: 'route[x]'}, {}]}}",
			[]string{`services.b.routes[1].name: duplicate route name "route[1]" (also routes[0])`}},
		{"split", "services: {b: {subsets: {v0: {}, v1: {}, v2: {}}, routes: [{split: " + list(20, func(i int) string { return fmt.Sprintf("{subset: v%d, weight: 1}", min(i, 2)) }) + "}]}}",
			[]string{`services.b.routes[0].split[3].subset: subset "v2" appears twice in the split (also split[2])`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			got := problemsOf(t, err)
			if len(got) < len(tt.want) || strings.Join(got[:len(tt.want)], "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("problems:\n  %s\nwant first:\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
		})
	}
}
