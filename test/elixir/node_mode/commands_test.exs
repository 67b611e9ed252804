defmodule ProtonStreamTest.NodeMode.CommandsTest do
  # A command is taken or refused whole in node mode too: command/2 sends it
  # as one message, which the node queues whole or refuses whole.
  use ExUnit.Case, async: true
  @moduletag :node
  import ProtonStreamTest.Helpers

  setup do
    Process.flag(:trap_exit, true)
    ProtonStreamTest.Mode.context(:node)
  end

  test "a 10 MB command arrives whole, past a 4 MiB stdin limit", %{m: m} do
    size = 10_000_000
    {:ok, ps} = ProtonStream.open("wc", ["-c"], [stdin_limit: 4 * 1024 * 1024] ++ m)
    ProtonStream.command(ps, :binary.copy("z", size))
    ProtonStream.eof(ps)
    assert %{stdout: out, exit: :normal} = collect(ps, 60_000)
    assert String.trim(out) == Integer.to_string(size)
    refute_received {^ps, {:error, _, _}}
  end

  test "a command over the node's --max-request is refused whole; later ones go through",
       %{m: m} do
    {:ok, ps} = ProtonStream.open("wc", ["-c"], m)
    ProtonStream.command(ps, :binary.copy("z", 17 * 1024 * 1024))
    assert_receive {^ps, {:error, :too_large, message}}, 10_000
    assert message =~ "max-request"
    ProtonStream.command(ps, "12345")
    ProtonStream.eof(ps)
    assert %{stdout: out, exit: :normal} = collect(ps, 30_000)
    assert String.trim(out) == "5"
  end
end
