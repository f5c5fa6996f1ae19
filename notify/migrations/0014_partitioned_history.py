"""Partitioned history: notify_delivery and notify_deliverylog partitioned by UTC day
(notify.partitions.convert), without downtime on an existing installation.

Not atomic: the new primary keys are built with CREATE INDEX CONCURRENTLY and the cutover CHECK is
validated while writes go on; each table's swap is its own short transaction. Run it again after
an interruption: every step is idempotent. Irreversible (going back means copying the rows into
a plain table: a maintenance window of its own). docs/scaling.md "Partitioned history".
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def drop_foreign_keys_to_delivery(apps, schema_editor):
    """The log's and the events' foreign keys to notify_delivery(id) go first: the swap drops the
    primary key they lean on, and ``id`` alone is no longer unique in the partitioned table."""
    from notify.partitions import _retry_lock

    def step(cursor):
        cursor.execute("""SELECT conrelid::regclass::text, conname FROM pg_constraint
                          WHERE contype = 'f' AND confrelid = to_regclass('notify_delivery')""")
        for table, name in cursor.fetchall():
            cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")

    _retry_lock(schema_editor.connection, step)


def partition(apps, schema_editor):
    from notify import partitions

    connection = schema_editor.connection
    ahead = settings.NOTIFY_HISTORY_PARTITIONS_AHEAD
    with connection.cursor() as cursor:
        # The log's index on delivery_id alone: (delivery_id, at) serves every look-up it did.
        cursor.execute("""SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                          WHERE x.indrelid = to_regclass('notify_deliverylog') AND x.indnatts = 1
                            AND pg_get_indexdef(x.indexrelid) LIKE '%%USING btree (delivery_id)'""")
        redundant = [name for (name,) in cursor.fetchall()]
    partitions.convert(connection, "notify_delivery", ahead=ahead)
    partitions.convert(connection, "notify_deliverylog", ahead=ahead, redundant=redundant)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('notify', '0013_broadcast'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='deliverylog',
                    name='delivery',
                    field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                            related_name='log', to='notify.delivery'),
                ),
                migrations.AlterField(
                    model_name='deliveryevent',
                    name='delivery',
                    field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.CASCADE,
                                            related_name='events', to='notify.delivery'),
                ),
            ],
            database_operations=[
                migrations.RunPython(drop_foreign_keys_to_delivery, migrations.RunPython.noop, atomic=False),
                migrations.RunPython(partition, atomic=False),
            ],
        ),
    ]
