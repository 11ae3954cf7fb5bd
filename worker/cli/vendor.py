"""placeholder until the vendor push lands"""

import click


def register(group: click.Group) -> None:
    pass
