defmodule ProtonStreamTest.StreamTest do
  # Output fidelity and flow control through the VM's shared ps_port (the
  # default): the shared tests (support/stream_cases.exs). Where message
  # mode's output waits is in local_test.exs.
  use ExUnit.Case, async: true
  use ProtonStreamTest.Cases.Stream, mode: :shared
end
