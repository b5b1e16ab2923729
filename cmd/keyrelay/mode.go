package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyrelay/keyrelay/bridge"
)

// resolveMode asks the endpoint whether it has cluster mode enabled (INFO
// cluster) and returns the mode keyrelay runs in. A configured mode the
// server contradicts is a configuration error (exit status 2): keyrelay never
// listens to one shard of a cluster. While the endpoint cannot be reached,
// an explicit mode is trusted (the subscriptions retry on their own) and
// auto keeps asking until ctx ends.
func resolveMode(ctx context.Context, cfg *Config, opt *redis.Options, log *slog.Logger) (bridge.RedisMode, error) {
	o := *opt
	o.Protocol, o.MaxRetries, o.DisableIdentity = 2, -1, true
	c := redis.NewClient(&o)
	defer c.Close()
	lastKind := ""
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		enabled, err := bridge.DetectClusterEnabled(actx, c)
		cancel()
		switch {
		case err == nil:
			return checkMode(cfg.RedisMode, enabled)
		case ctx.Err() != nil:
			return cfg.RedisMode, nil
		case errors.Is(bridge.ClassifyRedisError(err), bridge.ErrRedisPermission):
			if cfg.RedisMode == bridge.ModeAuto {
				return "", fmt.Errorf("KEYRELAY_REDIS_MODE=auto cannot ask the endpoint whether cluster mode is enabled (%v): grant +info, or set KEYRELAY_REDIS_MODE to standalone or cluster", err)
			}
			return cfg.RedisMode, nil
		case bridge.IsPermanentRedisError(err):
			return "", fmt.Errorf("redis: %w%s", err, redisErrorHint(err, nil))
		case cfg.RedisMode != bridge.ModeAuto:
			log.Warn("cannot ask the endpoint whether cluster mode is enabled; trusting KEYRELAY_REDIS_MODE", "mode", cfg.RedisMode, "err", err)
			return cfg.RedisMode, nil
		}
		if kind := err.Error(); kind != lastKind {
			lastKind = kind
			log.Warn("cannot reach the endpoint to ask whether cluster mode is enabled; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return cfg.RedisMode, nil
		case <-time.After(min(time.Duration(attempt)*200*time.Millisecond, 5*time.Second)):
		}
	}
}

// checkMode returns the mode to run in, or the configuration error when the
// configured mode contradicts what the server says.
func checkMode(configured bridge.RedisMode, clusterEnabled bool) (bridge.RedisMode, error) {
	switch {
	case configured == bridge.ModeStandalone && clusterEnabled:
		return "", &ConfigError{Problems: []error{errors.New(`KEYRELAY_REDIS_MODE="standalone": the endpoint has cluster mode enabled, and one subscription would hear one shard only: set cluster (or auto)`)}}
	case configured == bridge.ModeCluster && !clusterEnabled:
		return "", &ConfigError{Problems: []error{errors.New(`KEYRELAY_REDIS_MODE="cluster": the endpoint has cluster mode disabled: set standalone (or auto)`)}}
	case clusterEnabled:
		return bridge.ModeCluster, nil
	}
	return bridge.ModeStandalone, nil
}
