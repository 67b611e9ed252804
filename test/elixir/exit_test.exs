defmodule ProtonStreamTest.ExitTest do
  # Exit reasons, spawn errors, and the owner-killed contract through the
  # VM's shared ps_port (the default): the shared tests (support/exit_cases.exs).
  use ExUnit.Case, async: false
  use ProtonStreamTest.Cases.Exit, mode: :shared
end
