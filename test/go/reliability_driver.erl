%% Erlang side of the reliability suite (test/go/reliability_*_test.go).
%% Loaded next to node_driver, whose evaluator calls these functions as
%% reliability_driver:Name(...).
-module(reliability_driver).
-export([open_ports/3, open_seq/2, open_par/2, stdin_flood/4, stdin_paced/4,
         watch/1, down_reason/2, owners/3, bytes_of/2, random_bytes/2, echo/1,
         flood_check/2]).

%% open_ports(PsPort, ArgLists, Env): opens one raw {packet,4} port of
%% ps_port per argument list, waits for each {started, OsPid}, and returns
%% the OS pids of the children. The ports stay open (owned by the caller).
open_ports(PsPort, ArgLists, Env) ->
    Ports = [open_port({spawn_executable, PsPort},
                       [binary, {packet, 4}, exit_status, {args, Args}, {env, Env}])
             || Args <- ArgLists],
    [receive
         {P, {data, D}} ->
             case binary_to_term(D) of
                 {started, OsPid} -> OsPid;
                 Other -> exit({not_started, Args, Other})
             end;
         {P, {exit_status, S}} -> exit({ps_port_exited, Args, S})
     after 20000 -> exit({start_timeout, Args})
     end || {P, Args} <- lists:zip(Ports, ArgLists)].

%% open_seq(N, Opts): N times in a row, opens cat on the ps_port node, echoes
%% a line through it, sends eof and waits for the normal exit. Returns
%% {ok, Micros} or the first failure.
open_seq(N, Opts) ->
    T0 = erlang:monotonic_time(microsecond),
    case open_seq(1, N, Opts) of
        ok -> {ok, erlang:monotonic_time(microsecond) - T0};
        Bad -> Bad
    end.

open_seq(I, N, _Opts) when I > N -> ok;
open_seq(I, N, Opts) ->
    case node_driver:open(<<"cat">>, [], Opts) of
        {ok, P} ->
            Line = <<(integer_to_binary(I))/binary, "\n">>,
            P ! {self(), {command, Line}},
            P ! {self(), eof},
            case node_driver:collect(P, 10000) of
                {Line, <<>>, [], normal} -> open_seq(I + 1, N, Opts);
                Other -> {bad, I, Other}
            end;
        Error -> {open_failed, I, Error}
    end.

%% open_par(N, Opts): N processes open cat at once, echo a line each, and
%% close it. Returns {ok, OsPids, Micros} or the first failure.
open_par(N, Opts) ->
    Parent = self(),
    T0 = erlang:monotonic_time(microsecond),
    Ws = [spawn(fun() -> par_worker(Parent, I, Opts) end) || I <- lists:seq(1, N)],
    Rs = [receive {W, R} -> R after 60000 -> {timeout, W} end || W <- Ws],
    T = erlang:monotonic_time(microsecond) - T0,
    case [R || R <- Rs, element(1, R) =/= ok] of
        [] -> {ok, [OsPid || {ok, OsPid} <- Rs], T};
        [Bad | _] -> Bad
    end.

par_worker(Parent, I, Opts) ->
    R = case node_driver:open(<<"cat">>, [], Opts) of
            {ok, P} ->
                OsPid = node_driver:os_pid(P),
                Line = <<(integer_to_binary(I))/binary, "\n">>,
                P ! {self(), {command, Line}},
                receive
                    {P, {data, Line}} ->
                        P ! {self(), close},
                        case node_driver:collect(P, 20000) of
                            {<<>>, <<>>, [closed], normal} -> {ok, OsPid};
                            Other -> {bad_close, I, Other}
                        end;
                    {P, Other} -> {bad_echo, I, Other}
                after 30000 -> {echo_timeout, I}
                end;
            Error -> {open_failed, I, Error}
        end,
    Parent ! {self(), R}.

%% stdin_flood(P, Total, Chunk, Finish): sends Total bytes to P's stdin in
%% Chunk-byte commands as fast as possible, then Finish (eof or close), and
%% collects the child's output and exit. Returns {Sent, Refused,
%% RefusedBytes, Stdout, Exit}: every refused command was reported with
%% {error, stdin_overflow, Msg}.
stdin_flood(P, Total, Chunk, Finish) ->
    B = binary:copy(<<"z">>, Chunk),
    N = Total div Chunk,
    [P ! {self(), {command, B}} || _ <- lists:seq(1, N)],
    P ! {self(), Finish},
    flood_collect(P, N * Chunk, 0, 0, []).

flood_collect(P, Sent, Refused, RBytes, Out) ->
    receive
        {P, {error, stdin_overflow, Msg}} ->
            {match, [Size]} = re:run(Msg, "^([0-9]+) bytes for stdin refused", [{capture, all_but_first, binary}]),
            flood_collect(P, Sent, Refused + 1, RBytes + binary_to_integer(Size), Out);
        {P, {data, D}} -> flood_collect(P, Sent, Refused, RBytes, [Out, D]);
        {P, closed} -> flood_collect(P, Sent, Refused, RBytes, Out);
        {P, Other} -> {unexpected, Other};
        {'EXIT', P, R} -> {Sent, Refused, RBytes, iolist_to_binary(Out), R}
    after 120000 -> {timeout, Sent, Refused}
    end.

%% stdin_paced(P, Total, Chunk, Finish): like stdin_flood, but before each
%% command asks P how much stdin is still queued and waits while another
%% chunk would pass 1 MiB, well under the default stdin_limit (an owner that must
%% not lose input). Returns what stdin_flood does.
stdin_paced(P, Total, Chunk, Finish) ->
    B = binary:copy(<<"z">>, Chunk),
    N = Total div Chunk,
    paced(P, B, Chunk, N),
    P ! {self(), Finish},
    flood_collect(P, N * Chunk, 0, 0, []).

paced(_P, _B, _Chunk, 0) -> ok;
paced(P, B, Chunk, N) ->
    case gen_server:call(P, '$stdin_queued', 10000) + Chunk =< 1048576 of
        true ->
            P ! {self(), {command, B}},
            paced(P, B, Chunk, N - 1);
        false ->
            timer:sleep(1),
            paced(P, B, Chunk, N)
    end.

%% watch(P): a process that monitors P and reports how it went down to
%% whoever calls down_reason/2. Returns the watcher.
watch(P) ->
    spawn(fun() ->
                  Ref = erlang:monitor(process, P),
                  receive
                      {'DOWN', Ref, process, P, Why} ->
                          T = erlang:monotonic_time(millisecond),
                          receive {get, From} -> From ! {self(), Why, T} end
                  end
          end).

%% down_reason(W, Timeout): {Reason, MonotonicMs} of the watched pid's DOWN.
down_reason(W, Timeout) ->
    W ! {get, self()},
    receive {W, Why, T} -> {Why, T} after Timeout -> timeout end.

%% owners(N, Args, Opts): N processes that each open sh -c Args[0] and wait.
%% Returns [{Owner, P, OsPid}].
owners(N, Cmd, Opts) ->
    [node_driver:spawn_owner(<<"sh">>, [<<"-c">>, Cmd], Opts) || _ <- lists:seq(1, N)].

%% bytes_of(P, Timeout): {Stdout, ExitReason} of P (stderr ignored).
bytes_of(P, Timeout) ->
    case node_driver:collect(P, Timeout) of
        {Out, _Err, _Other, R} -> {Out, R};
        Timeout1 -> Timeout1
    end.

%% random_bytes(Seed, N): N pseudo-random bytes.
random_bytes(Seed, N) ->
    rand:seed(exsss, {Seed, Seed, Seed}),
    rand:bytes(N).

%% echo(Data): cat on the ps_port node gets Data (in commands of at most
%% 64 KiB, paced below the default stdin_limit) and must give it back
%% exactly. Returns true, or what came back.
echo(Data) ->
    {ok, P} = node_driver:open(<<"cat">>, []),
    send_paced(P, Data),
    P ! {self(), eof},
    case node_driver:collect(P, 30000) of
        {Data, <<>>, [], normal} -> true;
        {Out, Err, Other, R} -> {byte_size(Out), byte_size(Data), Err, Other, R};
        Timeout -> Timeout
    end.

send_paced(_P, <<>>) -> ok;
send_paced(P, Data) ->
    N = min(65536, byte_size(Data)),
    <<Chunk:N/binary, Rest/binary>> = Data,
    case gen_server:call(P, '$stdin_queued', 10000) + N =< 1048576 of
        true -> P ! {self(), {command, Chunk}}, send_paced(P, Rest);
        false -> timer:sleep(1), send_paced(P, Data)
    end.

%% flood_check(Total, Limit): wc -c with stdin_limit Limit gets Total bytes
%% flooded in 64 KiB commands. Returns {Refused, true} when wc counted
%% exactly the bytes not refused.
flood_check(Total, Limit) ->
    {ok, P} = node_driver:open(<<"wc">>, [<<"-c">>], [{stdin_limit, Limit}]),
    case stdin_flood(P, Total, 65536, eof) of
        {Sent, Refused, RBytes, Out, normal} ->
            {Refused, binary_to_integer(string:trim(Out)) =:= Sent - RBytes};
        Other -> Other
    end.
