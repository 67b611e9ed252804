defmodule ProtonStream.Application do
  @moduledoc false
  # Holds ProtonStream.SharedPort, the VM's shared ps_port and the process
  # that routes its frames (restarted, with a new ps_port, if it crashes),
  # and ProtonStream.Registry, where node mode's watchers register under the
  # pid they watch (see ProtonStream.Remote).
  use Application

  @impl Application
  def start(_type, _args) do
    children = [
      {Registry, keys: :unique, name: ProtonStream.Registry},
      ProtonStream.SharedPort
    ]

    Supervisor.start_link(children, strategy: :one_for_one, name: ProtonStream.Supervisor)
  end
end
