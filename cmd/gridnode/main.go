// Command gridnode runs a gridchat node, or a local swarm of them.
//
//	gridnode run [--config file.toml] [flags]   run one node until SIGINT/SIGTERM
//	gridnode swarm -n 3                         run 3 nodes on loopback
//	gridnode id [--data-dir dir]                print the node's peer ID
//	gridnode version                            print the version
//
// Configuration comes from flags, then GRIDCHAT_* environment variables,
// then the TOML file named by --config (or GRIDCHAT_CONFIG), then defaults;
// README.md lists every key.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/iagon/gridchat/node"
)

func main() {
	if err := newRootCmd(os.Stdout, os.Stderr).Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "gridnode: %s\n", oneLine(err.Error()))
		os.Exit(1)
	}
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "gridnode",
		Short:         "Run a gridchat node",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newRunCmd(), newSwarmCmd(), newIDCmd(), newVersionCmd())
	return root
}

// signalContext is cancelled by SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func newRunCmd() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run a node until SIGINT or SIGTERM",
		Args:  cobra.NoArgs,
	}
	cmd.Flags().StringVar(&configPath, "config", "", "TOML configuration file (GRIDCHAT_CONFIG)")
	flags := bindFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		s, err := loadSettings(cmd.Flags(), flags, configPath, environMap())
		if err != nil {
			return err
		}
		log, err := s.logger(cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		ctx, stop := signalContext()
		defer stop()
		n, err := node.New(ctx, s.nodeConfig(log))
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "gateway=%s peer_id=%s\n", n.GatewayURL(), n.ID())
		<-ctx.Done()
		stop() // a second signal now ends the process at once
		log.Info("shutting down")
		return n.Close()
	}
	return cmd
}

func newIDCmd() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "id",
		Short: "Print the peer ID of the data directory, creating its key if needed",
		Args:  cobra.NoArgs,
	}
	cmd.Flags().StringVar(&configPath, "config", "", "TOML configuration file (GRIDCHAT_CONFIG)")
	var dataDir string
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "directory of the identity key (data_dir)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		s, err := loadSettings(cmd.Flags(), nil, configPath, environMap())
		if err != nil {
			return err
		}
		if cmd.Flags().Changed("data-dir") {
			s.DataDir = dataDir
		}
		key, err := node.LoadOrCreateIdentity(s.DataDir)
		if err != nil {
			return err
		}
		id, err := peerIDOf(key)
		if err != nil {
			return err
		}
		fmt.Fprintln(cmd.OutOrStdout(), id)
		return nil
	}
	return cmd
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "gridnode %s %s %s/%s\n", node.Version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}
