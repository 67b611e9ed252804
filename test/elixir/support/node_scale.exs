defmodule ProtonStreamTest.NodeScale do
  @moduledoc """
  Node mode at scale, what test/elixir/node_mode/scale_test.exs and
  bench/node_scale.exs (which requires this file) share: a second VM of
  owners, a `:peer` with this VM's cookie whose plain processes own
  programs on a ps_port node (the opens are the node's own call,
  docs/node.md, made from the peer, so the peer is connected to the ps_port
  node itself and its death is the node's news), and whether a child still
  runs.
  """

  @doc "Starts the owners' VM; returns `{peer, peer_node}`."
  @spec owner_vm!() :: {pid(), node()}
  def owner_vm! do
    {:ok, peer, peer_node} =
      :peer.start(%{
        name: :"scale_owner_#{System.unique_integer([:positive])}",
        host: ~c"127.0.0.1",
        longnames: true,
        args: [~c"-setcookie", Atom.to_charlist(Node.get_cookie())]
      })

    {peer, peer_node}
  end

  @doc """
  Opens `count` programs `sleep 600` on `ps_node`, each owned by a process
  of `peer_node` that sleeps forever; returns their OS pids. `timeout` (ms)
  bounds each call.
  """
  @spec open_sleepers!(node(), node(), pos_integer(), timeout()) :: [pos_integer()]
  def open_sleepers!(peer_node, ps_node, count, timeout) do
    for _ <- 1..count do
      owner = :erpc.call(peer_node, :erlang, :spawn, [:timer, :sleep, [:infinity]])
      req = {:open, "sleep", ["600"], %{}, owner}

      {:ok, ps} =
        :erpc.call(peer_node, :gen_server, :call, [{:proton_stream, ps_node}, req, timeout])

      GenServer.call(ps, :"$os_pid", timeout)
    end
  end

  @doc "The owners' VM's OS pid (a charlist, as `:os.getpid/0` gives it)."
  @spec vm_os_pid(node()) :: charlist()
  def vm_os_pid(peer_node), do: :erpc.call(peer_node, :os, :getpid, [])

  @doc "True while the process `os_pid` exists and is not a zombie."
  @spec running?(pos_integer()) :: boolean()
  def running?(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, s} -> not String.contains?(s, ") Z ")
      _ -> false
    end
  end
end
