defmodule ProtonStreamTest.MessagesTest do
  # Message mode through a port: the shared tests (support/messages_cases.exs)
  # and what only port mode's local server does.
  use ExUnit.Case, async: true
  use ProtonStreamTest.Cases.Messages, mode: :port

  describe "port mode's server" do
    test "the owner is linked to ps" do
      {:ok, ps} = ProtonStream.open("cat", [])
      assert ps in elem(Process.info(self(), :links), 1)
      ProtonStream.close(ps)
      assert_receive {^ps, :closed}, 10_000
    end

    test "{ps, :closed} comes once the server is gone" do
      {:ok, ps} = ProtonStream.open("cat", [])
      ProtonStream.close(ps)
      assert_receive {^ps, :closed}, 10_000
      refute Process.alive?(ps)
    end

    test ":connect moves the link; the server stops with its new owner" do
      {:ok, ps} = ProtonStream.open("cat", [])
      new_owner = spawn_link(fn -> Process.sleep(:infinity) end)
      ProtonStream.connect(ps, new_owner)
      assert_receive {^ps, :connected}, 10_000
      {:links, links} = Process.info(ps, :links)
      assert new_owner in links
      refute self() in links

      ref = Process.monitor(ps)
      Process.unlink(new_owner)
      Process.exit(new_owner, :kill)
      assert_receive {:DOWN, ^ref, :process, ^ps, {:shutdown, {:owner_exited, :killed}}}, 10_000
    end

    test "unexpected messages to the process are logged and ignored" do
      {:ok, ps} = ProtonStream.open("cat", [])

      log =
        ExUnit.CaptureLog.capture_log(fn ->
          send(ps, :hello)
          send(ps, {self(), :bogus})
          ProtonStream.command(ps, "ok")
          assert_receive {^ps, {:data, "ok"}}, 10_000
        end)

      assert log =~ "unexpected message: :hello"
      ProtonStream.close(ps)
    end
  end

  test "signal/2 raises for unknown signals" do
    assert_raise ArgumentError, ~r/unknown signal :sigfoo/, fn ->
      ProtonStream.signal(self(), :sigfoo)
    end

    assert_raise ArgumentError, ~r/invalid signal 0/, fn -> ProtonStream.signal(self(), 0) end
    assert_raise ArgumentError, fn -> ProtonStream.signal(self(), 65) end
  end

  test "muontrap_path is the absolute path of the ps_port executable" do
    path = ProtonStream.muontrap_path()
    assert Path.type(path) == :absolute
    assert String.ends_with?(path, "/priv/ps_port")
    assert %{type: :regular, mode: mode} = File.stat!(path)
    assert Bitwise.band(mode, 0o111) != 0
  end
end
