package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/iagon/gridchat/node"
)

// swarmListenAddrs returns the libp2p addresses of a swarm node: loopback,
// free ports, every transport.
func swarmListenAddrs() []string {
	return []string{
		"/ip4/127.0.0.1/tcp/0",
		"/ip4/127.0.0.1/udp/0/quic-v1",
		"/ip4/127.0.0.1/tcp/0/ws",
	}
}

// maxSwarmNodes bounds gridnode swarm -n.
const maxSwarmNodes = 64

func newSwarmCmd() *cobra.Command {
	var (
		count       int
		dataDir     string
		logLevel    string
		logFormat   string
		formTimeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "swarm",
		Short: "Run N nodes on loopback that join one grid, until SIGINT or SIGTERM",
		Long: `Run N nodes on 127.0.0.1 with free ports. Node 1 starts alone; the others
bootstrap from it. Each node has its own data directory (under --data-dir, or
a temporary directory removed at exit) and its own gateway. One line per node
is printed on stdout with its gateway URL and peer ID.`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().IntVarP(&count, "nodes", "n", 3, "number of nodes")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "parent of the nodes' data directories (node-1, node-2, ...); default a temporary directory removed at exit")
	cmd.Flags().StringVar(&logLevel, "log-level", "warn", "debug, info, warn or error")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "text or json")
	cmd.Flags().DurationVar(&formTimeout, "form-timeout", 30*time.Second, "how long to wait for the routing tables to fill")
	cmd.RunE = func(cmd *cobra.Command, _ []string) (err error) {
		if count < 1 || count > maxSwarmNodes {
			return fmt.Errorf("swarm: -n %d: want 1 to %d nodes", count, maxSwarmNodes)
		}
		s := DefaultSettings()
		s.LogLevel, s.LogFormat = logLevel, logFormat
		log, err := s.logger(cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		if dataDir == "" {
			tmp, err := os.MkdirTemp("", "gridnode-swarm-")
			if err != nil {
				return fmt.Errorf("swarm: %w", err)
			}
			defer func() {
				if rmErr := os.RemoveAll(tmp); rmErr != nil {
					err = errors.Join(err, fmt.Errorf("swarm: remove %s: %w", tmp, rmErr))
				}
			}()
			dataDir = tmp
		}

		ctx, stop := signalContext()
		defer stop()
		var nodes []*node.Node
		defer func() {
			for i := len(nodes) - 1; i >= 0; i-- {
				if cerr := nodes[i].Close(); cerr != nil {
					err = errors.Join(err, fmt.Errorf("swarm: close node %d: %w", i+1, cerr))
				}
			}
		}()
		for i := range count {
			cfg := s.nodeConfig(log.With("node", i+1))
			cfg.DataDir = filepath.Join(dataDir, fmt.Sprintf("node-%d", i+1))
			cfg.ListenAddrs = swarmListenAddrs()
			cfg.GatewayAddr = "127.0.0.1:0"
			if i > 0 {
				for _, a := range nodes[0].P2PAddrs() {
					cfg.Bootstrap = append(cfg.Bootstrap, a.String())
				}
			}
			n, err := node.New(ctx, cfg)
			if err != nil {
				return fmt.Errorf("swarm: node %d: %w", i+1, err)
			}
			nodes = append(nodes, n)
			fmt.Fprintf(cmd.OutOrStdout(), "node=%d gateway=%s peer_id=%s\n", i+1, n.GatewayURL(), n.ID())
		}

		formed := make(chan error, 1)
		go func() {
			// Each node waits on ctx, so this returns promptly on a signal.
			var errs []error
			deadline := time.Now().Add(formTimeout)
			for i, n := range nodes {
				wctx, cancel := context.WithDeadline(ctx, deadline)
				if err := n.DHT().WaitForPeers(wctx, count-1); err != nil {
					errs = append(errs, fmt.Errorf("node %d: %w", i+1, err))
				}
				cancel()
			}
			formed <- errors.Join(errs...)
		}()
		select {
		case err := <-formed:
			if err != nil && ctx.Err() == nil {
				log.Warn("swarm not fully formed", "err", oneLine(err.Error()))
			} else if err == nil {
				fmt.Fprintf(cmd.OutOrStdout(), "swarm ready: %d nodes\n", count)
			}
		case <-ctx.Done():
			<-formed
		}
		<-ctx.Done()
		stop() // a second signal now ends the process at once
		log.Info("shutting down swarm")
		return nil
	}
	return cmd
}
