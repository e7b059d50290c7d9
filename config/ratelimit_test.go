package config_test

import "testing"

func TestLoadRateLimitDefaults(t *testing.T) {
	cleanEnv(t)
	for _, n := range []string{"REDIS_PREFIX", "GLOBAL_RATE_LIMIT", "API_RATE_LIMIT", "RATE_LIMIT_PROCESSES"} {
		unset(t, "MQ_"+n)
	}
	cfg := load(t)
	// A new user meets no send limit and a generous API limit.
	if cfg.RedisPrefix != "mq:" || cfg.GlobalRateLimit != 0 || cfg.APIRateLimit != 1000 || cfg.RateLimitProcesses != 1 {
		t.Fatalf("defaults: prefix %q, global %d, api %d, processes %d",
			cfg.RedisPrefix, cfg.GlobalRateLimit, cfg.APIRateLimit, cfg.RateLimitProcesses)
	}
	t.Setenv("MQ_GLOBAL_RATE_LIMIT", "600")
	t.Setenv("MQ_API_RATE_LIMIT", "0")
	t.Setenv("MQ_RATE_LIMIT_PROCESSES", "3")
	t.Setenv("MQ_REDIS_PREFIX", "staging:")
	cfg = load(t)
	if cfg.RedisPrefix != "staging:" || cfg.GlobalRateLimit != 600 || cfg.APIRateLimit != 0 || cfg.RateLimitProcesses != 3 {
		t.Fatalf("set: %+v", cfg)
	}
}

func TestLoadRejectsBadRateLimits(t *testing.T) {
	for _, tc := range []struct{ name, value string }{
		{"GLOBAL_RATE_LIMIT", "-1"},
		{"API_RATE_LIMIT", "-5"},
		{"RATE_LIMIT_PROCESSES", "0"},
		{"REDIS_PREFIX", "mq{x}:"},
		{"REDIS_PREFIX", "has space"},
	} {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			cleanEnv(t)
			t.Setenv("MQ_"+tc.name, tc.value)
			loadErr(t, "MQ_"+tc.name)
		})
	}
}
