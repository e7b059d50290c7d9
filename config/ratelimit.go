package config

import "strings"

// validateRateLimits checks the rate-limit settings. The prefix may not
// hold braces: Redis Cluster hashes the first {…} of a key, and a brace in
// the prefix would move every key's hash tag into the prefix, putting all
// limits of all apps in one slot and breaking the per-app tags.
func (c *Config) validateRateLimits(bad func(name, format string, args ...any)) {
	if len(c.RedisPrefix) > 64 || strings.ContainsAny(c.RedisPrefix, "{} \t\r\n") {
		bad("REDIS_PREFIX", "must be at most 64 characters without braces or spaces, not %q", c.RedisPrefix)
	}
	if c.GlobalRateLimit < 0 {
		bad("GLOBAL_RATE_LIMIT", "must be 0 (unlimited) or a number of emails per minute, not %d", c.GlobalRateLimit)
	}
	if c.APIRateLimit < 0 {
		bad("API_RATE_LIMIT", "must be 0 (unlimited) or a number of requests per second, not %d", c.APIRateLimit)
	}
	if c.RateLimitProcesses < 1 {
		bad("RATE_LIMIT_PROCESSES", "must be at least 1, not %d", c.RateLimitProcesses)
	}
}
