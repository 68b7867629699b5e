"""Shell completion scripts made from the parser itself, so they never miss a command or a
flag: commands, each command's flags, the choices of a flag or of a first positional
(`topology apply|check`), and file names where a value is a path. zsh runs the bash function
through its `bashcompinit` layer (part of zsh)."""

from __future__ import annotations

import argparse
import shlex

SHELLS = ("bash", "zsh")
# Flags whose value is a file name (completed as such).
_PATHS = frozenset(
    {
        "--db",
        "--hooks",
        "--home",
        "--input",
        "--nats-nkey-seed",
        "--nats-creds",
        "--nats-tls-ca",
        "--nats-tls-cert",
        "--nats-tls-key",
    }
)


def commands_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's commands, by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return sorted({o for a in parser._actions for o in a.option_strings if o.startswith("--")})


def _valued(parser: argparse.ArgumentParser) -> dict[str, list[str] | None]:
    """Flags that take a value -> their choices (None: any value)."""
    out: dict[str, list[str] | None] = {}
    for action in parser._actions:
        if action.option_strings and action.nargs != 0:
            for option in action.option_strings:
                out[option] = [str(c) for c in action.choices] if action.choices else None
    return out


def _positional_choices(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if not action.option_strings and action.choices:
            return [str(c) for c in action.choices]
    return []


def _words(items: list[str]) -> str:
    return shlex.quote(" ".join(items))


def bash(parser: argparse.ArgumentParser, prog: str = "conveyor") -> str:
    commands = commands_of(parser)
    valued: dict[str, list[str] | None] = {}
    for sub in [parser, *commands.values()]:
        valued.update(_valued(sub))
    value_cases = []
    for flag, choices in sorted(valued.items()):
        if choices:
            value_cases.append(
                f'        {flag}) COMPREPLY=($(compgen -W {_words(choices)} -- "$cur")); return ;;'
            )
        elif flag in _PATHS:
            value_cases.append(f'        {flag}) COMPREPLY=($(compgen -f -- "$cur")); return ;;')
        else:
            value_cases.append(f"        {flag}) return ;;")
    command_cases = []
    for name, sub in commands.items():
        flags = _flags(sub)
        positional = _positional_choices(sub)
        command_cases.append(f"        {name}) opts={_words(flags)}; first={_words(positional)} ;;")
    takes_value = " ".join(sorted(f for f, c in valued.items()))
    function = f"_{prog}_complete"
    return f"""# {prog} shell completion (bash), made by `{prog} completion bash`
{function}() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local commands={_words(list(commands))}
    local global_opts={_words(_flags(parser))}
    local takes_value={shlex.quote(takes_value)}
    local cmd="" i word skip=0 positionals=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        if ((skip)); then skip=0; continue; fi
        case "$word" in
            --*=*) ;;
            -*) [[ " $takes_value " == *" $word "* ]] && skip=1 ;;
            *) if [[ -z "$cmd" ]]; then cmd="$word"; else ((positionals++)); fi ;;
        esac
    done
    case "$prev" in
{chr(10).join(value_cases)}
    esac
    if [[ -z "$cmd" ]]; then
        if [[ "$cur" == -* ]]; then
            COMPREPLY=($(compgen -W "$global_opts" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        fi
        return
    fi
    local opts="" first=""
    case "$cmd" in
{chr(10).join(command_cases)}
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    elif [[ -n "$first" && $positionals -eq 0 ]]; then
        COMPREPLY=($(compgen -W "$first" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}}
complete -o filenames -F {function} {prog}
"""


def zsh(parser: argparse.ArgumentParser, prog: str = "conveyor") -> str:
    return f"""#compdef {prog}
# {prog} shell completion (zsh), made by `{prog} completion zsh`: the bash completion, through
# zsh's own bashcompinit layer.
(( $+functions[compdef] )) || {{ autoload -U +X compinit && compinit }}
autoload -U +X bashcompinit && bashcompinit
{bash(parser, prog).split(chr(10), 1)[1]}"""


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    if shell == "bash":
        return bash(parser)
    if shell == "zsh":
        return zsh(parser)
    raise ValueError(f"no completion for {shell!r}: one of {', '.join(SHELLS)}")
